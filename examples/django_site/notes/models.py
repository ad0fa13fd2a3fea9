"""A note: a title, a text and an optional file saved under MEDIA_ROOT/uploads/."""

from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=100)
    text = models.TextField(blank=True)
    attachment = models.FileField(upload_to="uploads/", blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]  # noqa: RUF012 (as the migration has it)

    def __str__(self) -> str:
        return self.title
