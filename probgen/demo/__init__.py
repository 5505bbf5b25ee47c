"""The demo: fits bundled families on bundled data and compares them. Imports models; never
imported by them."""
