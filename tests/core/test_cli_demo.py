"""The README's main job (``alara demo``) and ``alara info``."""

import stat

from alara.cli import demo, main


def test_demo_writes_a_png_and_reports_psnr(tmp_path, capsys):
    out = tmp_path / "sub" / "demo.png"
    assert main(["demo", "--size", "64", "--views", "90", "--bins", "92", "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert "FBP PSNR" in capsys.readouterr().out
    assert out.stat().st_mode & stat.S_IRGRP  # not a private temporary file
    assert list(out.parent.iterdir()) == [out]  # no temporary left behind


def test_demo_reconstruction_quality(tmp_path):
    # hann FBP of the half-intensity phantom at LoDoPaB's dose: measured 26.3 dB at 64 px
    # (blur-limited: 26.1 dB at 1 % of the dose); at 0.1 % (4 photons per bin) noise
    # dominates: measured 22.8 dB.
    full = demo.run(64, 90, 92, 4096.0, tmp_path / "a.png", seed=0)["psnr"]
    low = demo.run(64, 90, 92, 4.096, tmp_path / "b.png", seed=0)["psnr"]
    assert 24 < full < 30
    assert low < full - 2.5


def test_info_lists_backends(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    for key in ("torch", "threads", "native CPU", "backend auto (cpu)"):
        assert key in text
