"""The example's one app: notes with an attached file, a form and the admin."""
