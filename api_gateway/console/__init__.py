"""The web console's page template and static assets (served by api_gateway/routes/ui.py)."""
