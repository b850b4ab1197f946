"""The investigators' web app and JSON API (docs/webapp.md): `create_app(app)`."""
