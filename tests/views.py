"""Views the tests call through Django's full request cycle."""

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.http import HttpResponse

from tests.testapp.models import Document


def save_then_fail(request):
    """Writes a row, then saves a file whose save fails: SaveFailed propagates (a 500)."""
    Document.objects.create(title="written before the save", file="docs/none.txt")
    storages["default"].save("atomic/upload.bin", ContentFile(request.body or b"payload"))
    return HttpResponse("saved")
