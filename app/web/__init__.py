"""Server-rendered pages for participants and staff; they call the same services as the API."""
