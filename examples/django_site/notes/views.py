"""The notes page (a list and a CSRF-protected form with a file upload) and one note."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from .forms import NoteForm
from .models import Note


def index(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = NoteForm(request.POST, request.FILES)
        if form.is_valid():
            note = form.save()
            return redirect("note", note_id=note.pk)
    else:
        form = NoteForm()
    return render(request, "notes/index.html", {"form": form, "notes": Note.objects.all()[:20]})


def note(request: HttpRequest, note_id: int) -> HttpResponse:
    return render(request, "notes/note.html", {"note": get_object_or_404(Note, pk=note_id)})
