"""Every status petrel.h defines has a text from petrel_strerror and a Python exception class."""
import re
from pathlib import Path

import pytest

import petrel
from petrel._lib import lib
from petrel.exceptions import error_for

HEADER = Path(__file__).resolve().parents[3] / "include" / "petrel.h"
STATUSES = {m.group(1): int(m.group(2)) for m in re.finditer(r"#define (PETREL_E_\w+) \((-\d+)\)", HEADER.read_text())}


def test_header_defines_statuses():
    assert len(STATUSES) > 50


@pytest.mark.parametrize("name", sorted(STATUSES))
def test_status_has_text_and_class(name):
    status = STATUSES[name]
    text = lib.petrel_strerror(status).decode()
    assert text and text != "unknown error", name
    error = error_for(status)
    assert isinstance(error, petrel.PetrelError) and error.status == status
    assert str(error) == text


def test_bands_map_to_classes():
    assert isinstance(error_for(STATUSES["PETREL_E_BACKPRESSURE"]), petrel.Backpressure)
    assert isinstance(error_for(STATUSES["PETREL_E_HS_ACCEPT"]), petrel.InvalidHandshake)
    assert isinstance(error_for(STATUSES["PETREL_E_UNMASKED_FRAME"]), petrel.ProtocolError)
    assert isinstance(error_for(STATUSES["PETREL_E_INVALID_ARGUMENT"]), ValueError)
    assert isinstance(error_for(STATUSES["PETREL_E_UNKNOWN_CONNECTION"]), petrel.InvalidState)
    assert isinstance(error_for(STATUSES["PETREL_E_CONNECT"]), OSError)
