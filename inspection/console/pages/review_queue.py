import streamlit as st

st.title("review_queue")
