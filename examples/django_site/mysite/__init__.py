"""A minimal Django project served, unchanged, by wsgibridge (see the README, "Django")."""
