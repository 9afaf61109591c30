"""render_pdf: WeasyPrint may load the renditions' stylesheet and nothing else (no network, no files), and a
rendition prints without a WeasyPrint warning or error."""

import logging

import pytest

from service.render import render_packet_html, render_pdf
from service.render.assets import STYLESHEET_PATH
from tests.render.test_render_html import REFERRAL_ID, hostile_packet


def test_a_rendition_prints_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="weasyprint"):
        pdf = render_pdf(render_packet_html(hostile_packet(), referral_id=REFERRAL_ID))
    assert pdf.startswith(b"%PDF-")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_nothing_but_the_stylesheet_is_fetched(loopback_listener, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    port, received = loopback_listener
    urls = [f"http://127.0.0.1:{port}/remote.css", STYLESHEET_PATH.as_uri(), f"http://127.0.0.1:{port}/pixel.png",
            "file:///etc/hostname", "data:text/css,body%7Bcolor:red%7D"]
    html = (f'<!DOCTYPE html><html><head><link rel="stylesheet" href="{urls[0]}">'
            f'<link rel="stylesheet" href="{urls[1]}"><link rel="stylesheet" href="{urls[4]}"></head>'
            f'<body><p>x</p><img src="{urls[2]}" alt=""><img src="{urls[3]}" alt=""></body></html>')
    with caplog.at_level(logging.ERROR, logger="weasyprint"):
        assert render_pdf(html).startswith(b"%PDF-")
    refused = "\n".join(r.getMessage() for r in caplog.records)
    assert all(url in refused for url in urls), refused
    assert refused.count("FetchRefused") == len(urls)
    assert received == []  # not even a connection to 127.0.0.1
