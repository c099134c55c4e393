"""The dashboard, its JSON API and the bookmarklet."""
