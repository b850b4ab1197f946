"""Accounts of the web app: users and roles, sessions, API tokens, login rate limits, and the
`Scope` every data query takes (docs/webapp.md)."""
