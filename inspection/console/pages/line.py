import streamlit as st

st.title("line")
