"""Generators and discriminators: the prototype's exact shape and size, any-size sarcolornet, safe save/load."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from sarcolor.errors import SarColorError
from sarcolor.models import (
    SHIPPED,
    Block,
    ChannelNorm,
    ContextNet,
    ModelConfig,
    Pix2PixUNet,
    SarColorNet,
    SeedDiscriminator,
    _pad_to_multiple,
    build_model,
    count_params,
    load_model,
    read_metadata,
    save_model,
    seed_config,
)

TINY = ModelConfig(arch="sarcolornet", width=8, enc_depths=(1, 1), name="tiny")
SARCOLORNET = ModelConfig(arch="sarcolornet", width=24, tile=512, overlap=64, name="sarcolornet")  # a former default


@pytest.fixture(scope="module")
def seed_net() -> Pix2PixUNet:
    return Pix2PixUNet(seed_config()).eval()


def test_seed_unet_is_the_prototype(seed_net: Pix2PixUNet) -> None:
    assert abs(count_params(seed_net) - 41.8e6) < 0.1e6
    downs = [d[0] for d in seed_net.downs]
    assert [c.out_channels for c in downs] == [64, 128, 256, 512, 512, 512, 512]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in downs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in seed_net.downs[0])  # no BN on the first
    assert all(isinstance(d[1], nn.BatchNorm2d) and isinstance(d[-1], nn.LeakyReLU) for d in seed_net.downs[1:])
    ups = [u[0] for u in seed_net.ups]
    assert [c.out_channels for c in ups] == [512, 512, 512, 256, 128, 64]
    assert all(isinstance(c, nn.ConvTranspose2d) and c.kernel_size == (4, 4) and c.stride == (2, 2) for c in ups)
    dropout = [any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in u) for u in seed_net.ups]
    assert dropout == [True, True, True, False, False, False]
    assert all(isinstance(u[-1], nn.ReLU) for u in seed_net.ups)
    assert seed_net.last.out_channels == 3 and seed_net.multiple == 128
    cfg = seed_config()
    assert (cfg.in_channels, cfg.input_norm, cfg.tile) == (3, "seed", 128)


def test_seed_unet_output(seed_net: Pix2PixUNet) -> None:
    with torch.no_grad():
        y = seed_net(torch.rand(2, 3, 128, 128) * 2 - 1)
    assert y.shape == (2, 3, 128, 128) and y.abs().max() <= 1


def test_seed_discriminator() -> None:
    d = SeedDiscriminator(3)
    logits = d(torch.zeros(2, 3, 128, 128), torch.zeros(2, 3, 128, 128))
    assert logits.shape == (2, 1, 8, 8)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.in_channels for c in convs][0] == 6  # cat(SAR as 3 channels, RGB)
    assert all(c.stride == (2, 2) for c in convs[:4])
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in d.modules())
    assert sum(isinstance(m, nn.ReLU) for m in d.modules()) == 4


@pytest.mark.parametrize("cfg", [TINY, SARCOLORNET], ids=["tiny", "sarcolornet"])
@pytest.mark.parametrize("hw", [(8, 8), (37, 53), (64, 96)])
def test_sarcolornet_any_size(cfg: ModelConfig, hw: tuple[int, int]) -> None:
    net = SarColorNet(cfg).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 1, *hw) * 2 - 1)
    assert y.shape == (2, 3, *hw) and y.abs().max() <= 1


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_norm_choice(norm: str) -> None:
    net = SarColorNet(replace(TINY, norm=norm))
    kinds = {type(b.bn).__name__ for b in net.modules() if isinstance(b, Block)}
    assert kinds == {"batch": {"BatchNorm2d"}, "layer": {"ChannelNorm"}, "none": {"Identity"}}[norm]
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        train_out = net.train()(x)
        eval_out = net.eval()(x)
    # Only BatchNorm behaves differently in training (batch statistics) and inference (running statistics);
    # the per-pixel norm makes a tile's colour independent of the other tiles in its batch.
    assert torch.allclose(train_out, eval_out, atol=1e-6) == (norm != "batch")
    with torch.no_grad():
        assert torch.allclose(net(x[:1]), net(x)[:1], atol=1e-6)


def test_channel_norm_normalises_each_pixel() -> None:
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    y = ChannelNorm(6)(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 5, 7), atol=1e-5)
    assert torch.allclose(y.var(1, unbiased=False), torch.ones(2, 5, 7), atol=1e-3)
    assert torch.allclose(y, torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), eps=1e-6).permute(0, 3, 1, 2),
                          atol=1e-5)


def test_models_saved_before_the_norm_option_load_with_batchnorm() -> None:
    old = {k: v for k, v in json.loads(TINY.to_json()).items() if k != "norm"}
    assert ModelConfig.from_json(json.dumps(old)).norm == "batch"
    assert ModelConfig.from_json(TINY.to_json()).norm == TINY.norm == "layer"


def test_unknown_norm() -> None:
    with pytest.raises(SarColorError, match="unknown norm 'group'"):
        SarColorNet(replace(TINY, norm="group"))


def test_sarcolornet_is_small() -> None:
    net = build_model(SARCOLORNET)
    assert isinstance(net, SarColorNet) and count_params(net) < 2e6 and net.multiple == 16


def test_default_config_is_the_shipped_architecture() -> None:
    """``ModelConfig()`` builds what ships: the default model's configuration but for its name and renderings
    (those come from the data it was trained on) and its input (both polarisations and calibrated levels: five
    channels, set by configs/contextnet.yaml; a bare config reads one band, as every other architecture does)."""
    from dataclasses import asdict

    shipped = SHIPPED["default"]
    if not shipped.is_file():
        pytest.skip(f"shipped model {shipped} not installed")
    cfg = load_model("default")[1]
    assert isinstance(build_model(ModelConfig()), ContextNet)
    drop = ("name", "renders", "render", "extra", "in_channels", "polarisation")
    assert {k: v for k, v in asdict(ModelConfig()).items() if k not in drop} == {
        k: v for k, v in asdict(cfg).items() if k not in drop}


def test_save_load_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_model(TINY)
    path = tmp_path / "m.safetensors"
    save_model(path, net, TINY, card="# tiny\n")
    loaded, cfg = load_model(path)
    assert cfg == TINY and not loaded.training
    assert read_metadata(path)["model_card"] == "# tiny\n"
    x = torch.rand(1, 1, 20, 24)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), loaded(x))
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left over


def test_saved_models_follow_the_umask_not_owner_only(tmp_path: Path) -> None:
    """safetensors alone writes 0600: an exported model on a shared drive would be unreadable to the team."""
    old = os.umask(0o022)
    try:
        save_model(tmp_path / "m.safetensors", build_model(TINY), TINY)
        assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o644
        os.umask(0o077)
        save_model(tmp_path / "private.safetensors", build_model(TINY), TINY)
        assert stat.S_IMODE((tmp_path / "private.safetensors").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_bad_model_files_are_reported(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(SarColorError, match="not a readable safetensors model"):
        load_model(corrupt)
    alien = tmp_path / "alien.safetensors"
    save_file({"w": torch.zeros(3)}, str(alien))
    with pytest.raises(SarColorError, match="has no sarcolor config"):
        load_model(alien)
    wrong = tmp_path / "wrong.safetensors"
    save_model(wrong, build_model(replace(TINY, width=16)), TINY)  # weights of another width
    with pytest.raises(SarColorError, match="weights do not match config sarcolornet"):
        load_model(wrong)
    bad_cfg = tmp_path / "badcfg.safetensors"
    save_file({"w": torch.zeros(3)}, str(bad_cfg), metadata={"sarcolor_config": "{not json"})
    with pytest.raises(SarColorError, match="config is invalid"):
        load_model(bad_cfg)
    with pytest.raises(SarColorError, match="model not found"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(SarColorError, match="is a directory"):
        load_model(tmp_path)
    with pytest.raises(SarColorError, match="unknown architecture"):
        build_model(ModelConfig(arch="resnet"))


COLOUR = ModelConfig(arch="colournet", width=8, enc_depths=(1, 1, 2), renders=("a", "b"), render="b", name="c")


def test_colournet_gives_both_looks_at_any_size() -> None:
    from sarcolor.models import ColourNet, predict_look

    torch.manual_seed(0)
    net = build_model(COLOUR).eval()
    assert isinstance(net, ColourNet) and net.multiple == 16
    for hw in ((37, 50), (64, 64)):
        x = torch.rand(1, 1, *hw) * 2 - 1
        with torch.no_grad():
            sar, opt = predict_look(net, COLOUR, x, "sar"), predict_look(net, COLOUR, x, "optical")
            logits, light = net.raw(torch.nn.functional.pad(x, (0, (-hw[1]) % 16, 0, (-hw[0]) % 16)))
        assert sar.shape == opt.shape == (1, 3, *hw)
        assert sar.min() >= -1 and sar.max() <= 1 and not torch.equal(sar, opt)
        assert logits.shape[1] == 143 and logits.shape[-1] * 4 == x.shape[-1] + (-hw[1]) % 16
        assert light.min() >= 0 and light.max() <= 100


def test_colournet_knows_its_renderings(tmp_path: Path) -> None:
    from sarcolor.models import predict_look

    torch.manual_seed(0)
    net = build_model(COLOUR).eval()
    with torch.no_grad():
        net.render_embed.weight.normal_()  # make the two renderings differ
        x = torch.rand(1, 1, 32, 32) * 2 - 1
        a, b = predict_look(net, COLOUR, x, "sar", "a"), predict_look(net, COLOUR, x, "sar", "b")
        default = predict_look(net, COLOUR, x, "sar")
    assert not torch.equal(a, b) and torch.equal(default, b)
    with pytest.raises(SarColorError, match="render 'sen12': this model knows a, b"):
        predict_look(net, COLOUR, x, "sar", "sen12")
    save_model(tmp_path / "c.safetensors", net, COLOUR)
    net2, cfg2 = load_model(tmp_path / "c.safetensors")
    assert cfg2.renders == ("a", "b") and cfg2.render == "b" and cfg2.temperature == COLOUR.temperature
    with torch.no_grad():
        again = predict_look(net2, cfg2, x, "optical", "a")
        torch.testing.assert_close(again, predict_look(net, COLOUR, x, "optical", "a"))


def test_colournet_does_not_depend_on_the_crop_size() -> None:
    """Replicate padding: the colour of a patch's centre does not change with how much is around it (a zero
    border made an earlier version learn colours that held only at its training crop size)."""
    torch.manual_seed(0)
    net = build_model(COLOUR).eval()
    x = torch.rand(1, 1, 128, 128) * 2 - 1
    with torch.no_grad():
        big = net.raw(x)[0]
        small = net.raw(x[..., 32:96, 32:96])[0]
    centre_big, centre_small = big[..., 12:20, 12:20], small[..., 4:12, 4:12]
    assert (centre_big - centre_small).abs().max() < 0.02 * max(1.0, float(big.abs().max()))


CONTEXT = ModelConfig(arch="contextnet", width=16, windows=(3, 7), renders=("a", "b"), render="b", name="ctx")


def test_contextnet_features_are_the_sars_box_statistics() -> None:
    """Per 4x4 block: mean and std of the normalised dB; then per window: mean of the block means, their std
    and the mean block std. A flat image has no texture; a 4x4 checkerboard of blocks has it at the window
    scale only; pixel-level noise is block texture."""
    net = build_model(CONTEXT).eval()
    flat = torch.full((1, 1, 32, 32), 0.3)
    f = net.features(flat)
    assert f.shape == (1, 2 + 3 * 2, 8, 8)
    torch.testing.assert_close(f[:, [0, 2, 5]], torch.full((1, 3, 8, 8), 0.3))  # the means
    assert f[:, [1, 3, 4, 6, 7]].max() < 2e-3  # no variation anywhere (std floor sqrt(1e-6))
    blocks = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1  # +-1 per 4x4 block
    f = net.features(blocks.repeat_interleave(4, 0).repeat_interleave(4, 1)[None, None])
    assert f[:, 1].max() < 2e-3  # each block is flat inside
    assert 0.9 < float(f[0, 3, 4, 4]) <= 1.0  # the 3x3-block window around an inner block: 5 vs 4 of each sign
    noise = torch.where(torch.rand(1, 1, 32, 32) > 0.5, 1.0, -1.0)
    assert float(net.features(noise)[:, 1].mean()) > 0.8


def test_contextnet_gives_both_looks_renderings_and_roundtrips(tmp_path: Path) -> None:
    from sarcolor.models import ContextNet, LookNet, predict_look

    torch.manual_seed(0)
    net = build_model(CONTEXT).eval()
    assert isinstance(net, ContextNet) and isinstance(net, LookNet) and net.multiple == 4
    x = torch.rand(1, 1, 37, 50) * 2 - 1
    with torch.no_grad():
        net.render_embed.weight.normal_()
        sar, opt = predict_look(net, CONTEXT, x, "sar"), predict_look(net, CONTEXT, x, "optical")
        ab, light = net.raw(_pad_to_multiple(x, net.multiple))
        a = predict_look(net, CONTEXT, x, "sar", "a")
    assert sar.shape == opt.shape == (1, 3, 37, 50) and not torch.equal(sar, opt)
    assert ab.shape == (1, 2, 10, 13) and ab.abs().max() <= 60 and 0 <= light.min() and light.max() <= 100
    assert not torch.equal(a, sar)  # renderings differ; the default is "b"
    with pytest.raises(SarColorError, match="render 'sen12': this model knows a, b"):
        predict_look(net, CONTEXT, x, "sar", "sen12")
    save_model(tmp_path / "ctx.safetensors", net, CONTEXT)
    net2, cfg2 = load_model(tmp_path / "ctx.safetensors")
    assert cfg2.windows == (3, 7) and cfg2.arch == "contextnet"
    with torch.no_grad():
        torch.testing.assert_close(predict_look(net2, cfg2, x, "optical", "a"),
                                   predict_look(net, CONTEXT, x, "optical", "a"))


def test_contextnet_does_not_depend_on_the_crop_beyond_its_windows() -> None:
    """Its widest window is 7 blocks (28 px): a place farther than that from the crop's edge gets the same
    colour in a small crop as in a big one."""
    torch.manual_seed(0)
    net = build_model(CONTEXT).eval()
    x = torch.rand(1, 1, 128, 128) * 2 - 1
    with torch.no_grad():
        big, _ = net.raw(x)
        small, _ = net.raw(x[..., 32:96, 32:96])
    torch.testing.assert_close(big[..., 12:20, 12:20], small[..., 4:12, 4:12], atol=1e-4, rtol=1e-4)


def test_contextnet_head_over_bands_of_rows_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head runs over bands of rows (memory and speed); a pixel's colour depends on its own statistics
    only, so any band height gives exactly the one-pass result, per rendering, for a batch too."""
    import sarcolor.models as models

    torch.manual_seed(0)
    net = build_model(CONTEXT).eval()
    feats = torch.randn(3, 2 + 3 * len(CONTEXT.windows), 23, 17)
    render = torch.tensor([0, 1, 0])
    with torch.no_grad():
        net.render_embed.weight.normal_()
        monkeypatch.setattr(models, "HEAD_POSITIONS", 10**9)
        whole = net.head(feats, render)
        for positions in (1, 3 * 17 * 5, 3 * 17 * 22):  # bands of 1, 5 and 22 rows (the last one short)
            monkeypatch.setattr(models, "HEAD_POSITIONS", positions)
            for got, want in zip(net.head(feats, render), whole, strict=True):
                assert torch.equal(got, want)


def test_polarimetric_contextnet_reads_statistics_of_three_channels_and_two_flags() -> None:
    from sarcolor.models import ContextNet

    cfg = ModelConfig(arch="contextnet", in_channels=5, polarisation="VV+VH", width=8, windows=(3, 7),
                      renders=("s2-l2a",), render="s2-l2a")
    net = ContextNet(cfg).eval()
    x = torch.randn(1, 5, 32, 32)
    feats = net.features(x)
    assert feats.shape == (1, 3 * (2 + 3 * 2) + 2, 8, 8)
    one = ContextNet(ModelConfig(arch="contextnet", width=8, windows=(3, 7), renders=("a",), render="a"))
    # the single-band statistics are the polarimetric ones of channel 0 (grouped by statistic: every 3rd)
    torch.testing.assert_close(one.features(x[:, :1]), feats[:, 0:-2:3])
    torch.testing.assert_close(feats[:, -2:], torch.nn.functional.avg_pool2d(x[:, 3:5], 4))
    ab, light = net.head(feats)
    assert ab.shape == (1, 2, 8, 8) and light.shape == (1, 1, 8, 8)


def test_ben_l2a_is_the_l2a_rendering() -> None:
    from sarcolor.models import check_render

    cfg = ModelConfig(arch="contextnet", renders=("s2-l2a", "sen12"), render="s2-l2a")
    assert check_render(cfg, "ben-l2a") == "s2-l2a" and check_render(cfg, None) == "s2-l2a"
    with pytest.raises(SarColorError, match="knows s2-l2a, sen12"):
        check_render(cfg, "l1c")
