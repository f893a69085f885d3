"""The review console (Streamlit): what quality inspectors use every shift.

`app.py` at the top of the checkout builds the navigation; each page is a thin script in
`pages/` (file pages, so `AppTest.switch_page` can reach them) that calls `render()` in a view
module here. Views read through `data` and `stats` (cached DataFrames over the records read API,
`inspection.records.queries` and `analytics`; the console runs no SQL itself) and write only
through `actions`, which calls the records write API (append-only, audited). `context` finds the
database; `auth` signs users in and checks their role before every action. Everything here needs the `console` extra.
"""
