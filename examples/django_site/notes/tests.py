"""Live-server tests of the example site, on wsgibridge (``python manage.py test notes``).

Three tests, about twenty requests each over one keep-alive session:
``benchmarks/django_live.py`` times them on Django's own live server
(``NOTES_LIVE_SERVER=django``) and on wsgibridge's.
"""

import os
import re
import tempfile

import requests
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.test import override_settings

from .models import Note

if os.environ.get("NOTES_LIVE_SERVER") == "django":
    from django.test.testcases import LiveServerThread
else:
    from wsgibridge.testing.django import LiveServerThread

TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
ROUNDS = 5


class NotesLiveTests(StaticLiveServerTestCase):
    server_thread_class = LiveServerThread

    @classmethod
    def setUpClass(cls) -> None:
        media = tempfile.TemporaryDirectory()  # the uploads, removed after the tests
        cls.addClassCleanup(media.cleanup)
        cls.enterClassContext(override_settings(MEDIA_ROOT=media.name))
        super().setUpClass()

    def setUp(self) -> None:
        self.http = requests.Session()
        self.http.trust_env = False
        self.addCleanup(self.http.close)

    def get(self, path: str) -> requests.Response:
        response = self.http.get(self.live_server_url + path, timeout=5)
        self.assertEqual(response.status_code, 200, response.text[:500])
        return response

    def post_note(self, title: str, files: dict[str, tuple[str, bytes]]) -> requests.Response:
        form = self.get("/")
        match = TOKEN.search(form.text)
        assert match is not None
        return self.http.post(
            self.live_server_url + "/",
            data={"csrfmiddlewaretoken": match.group(1), "title": title, "text": "t"},
            files=files,
            headers={"Referer": self.live_server_url + "/"},
            timeout=5,
        )

    def test_pages(self) -> None:
        for _ in range(ROUNDS):
            self.get("/")
            self.get("/static/notes/site.css")
            self.get("/admin/login/")
            self.get("/static/admin/css/base.css")

    def test_notes_are_stored_and_shown(self) -> None:
        for number in range(ROUNDS):
            response = self.post_note(f"note {number}", {})
            self.assertEqual(response.status_code, 200)
            self.assertIn(f"note {number}", response.text)
            self.assertIn(f"note {number}", self.get("/").text)
        self.assertEqual(Note.objects.count(), ROUNDS)  # the test's database

    def test_uploads_and_csrf(self) -> None:
        for number in range(ROUNDS):
            data = bytes(range(256)) * (number + 1)
            response = self.post_note("upload", {"attachment": ("a.bin", data)})
            self.assertIn(f"({len(data)} bytes)", response.text)
            refused = self.http.post(self.live_server_url + "/", data={"title": "x"}, timeout=5)
            self.assertEqual(refused.status_code, 403)
