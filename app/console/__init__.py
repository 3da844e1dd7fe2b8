"""The browser console's static files (static/), served by app/routes/console.py."""
