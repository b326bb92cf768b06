"""Models the tests save files through, the way a Django project would."""

from django.db import models


class Document(models.Model):
    title = models.CharField(max_length=200)
    file = models.FileField(upload_to="docs/")

    def __str__(self) -> str:
        return self.title
