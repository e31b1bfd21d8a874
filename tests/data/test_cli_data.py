import pytest

from alara.cli import build_parser, main


@pytest.mark.parametrize("cmd", [[], ["synth"], ["check"], ["import-dicom"]])
def test_every_data_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", *cmd, "--help"])
    assert e.value.code == 0
    assert "usage: alara data" in capsys.readouterr().out


def test_data_without_subcommand_prints_help(capsys):
    assert main(["data"]) == 2
    assert "synth" in capsys.readouterr().out


def test_lodopab_flag_selects_full_geometry():
    args = build_parser().parse_args(["data", "synth", "out", "--lodopab"])
    from alara.cli.data import _geometry

    g = _geometry(args)
    assert g.grid.shape == (362, 362) and g.sinogram_shape == (1000, 513)
