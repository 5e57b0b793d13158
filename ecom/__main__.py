from ecom.cli import app

app()
