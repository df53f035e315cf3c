"""Fakes of the libraries the monitor talks to, named for what they fake and how they behave."""
