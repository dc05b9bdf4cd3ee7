"""The generator's blocks against EG3D's names and against straightforward formulas written here."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inference.core.config import (
    EG3D_PLANE_AXES,
    ORTHOGONAL_PLANE_AXES,
    GeneratorConfig,
    RenderingConfig,
    ffhq512_config,
)
from inference.core.networks.aware3d import aware3d_context
from inference.core.networks.decoder import OSGDecoder
from inference.core.networks.stylegan2 import (
    FullyConnectedLayer,
    MappingNetwork,
    SynthesisLayer,
    ToRGBLayer,
    make_resample_filter,
    modulated_conv2d,
    upsample2d,
)
from inference.core.networks.superresolution import SuperResolution
from inference.core.networks.triplane import TriPlaneGenerator
from inference.core.render.rays import pixel_rays
from inference.core.render.triplane import sample_triplane, sample_triplane_mean
from inference.core.render.volume import composite, importance_depths, uniform_depths

KEYS_TSV = Path(__file__).parent / "data" / "eg3d_ffhq512_G_ema_keys.tsv"


def official_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in KEYS_TSV.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        assert dtype == "float32"
        shapes[name] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return shapes


@pytest.fixture(scope="module")
def ffhq_generator() -> TriPlaneGenerator:
    torch.manual_seed(0)
    return TriPlaneGenerator(ffhq512_config()).eval()


def test_ffhq512_state_dict_has_exactly_the_official_names_and_shapes(ffhq_generator):
    expected = official_shapes()
    assert len(expected) == 176
    ours = {k: tuple(v.shape) for k, v in ffhq_generator.state_dict().items()}
    assert ours == expected
    assert sum(p.numel() for p in ffhq_generator.parameters()) == 30_662_136


def test_official_shaped_state_dict_loads_strictly(ffhq_generator):
    generator = TriPlaneGenerator(ffhq512_config())
    state = {name: torch.randn(shape) for name, shape in official_shapes().items()}
    generator.load_state_dict(state, strict=True)
    assert torch.equal(generator.backbone.synthesis.b64.conv0.weight, state["backbone.synthesis.b64.conv0.weight"])
    assert ffhq_generator.num_ws == 14


def _reference_fc(layer: FullyConnectedLayer, x: torch.Tensor, lr: float, lrelu: bool) -> torch.Tensor:
    fan_in = layer.weight.shape[1]
    y = x @ (layer.weight * lr / math.sqrt(fan_in)).T + layer.bias * lr
    return F.leaky_relu(y, 0.2) * math.sqrt(2) if lrelu else y


def test_mapping_matches_reference_formula():
    torch.manual_seed(1)
    mapping = MappingNetwork(z_dim=16, c_dim=25, w_dim=8, num_ws=5, num_layers=2, lr_multiplier=0.01)
    mapping.w_avg.copy_(torch.randn(8))
    for p in mapping.parameters():
        p.data.normal_()
    z, c = torch.randn(3, 16), torch.randn(3, 25)

    def norm(v):
        return v / torch.sqrt((v ** 2).mean(dim=1, keepdim=True) + 1e-8)

    x = torch.cat([norm(z), norm(_reference_fc(mapping.embed, c, 1.0, lrelu=False))], dim=1)
    x = _reference_fc(mapping.fc0, x, 0.01, lrelu=True)
    x = _reference_fc(mapping.fc1, x, 0.01, lrelu=True)
    psi = 0.7
    truncated = mapping.w_avg + psi * (x - mapping.w_avg)
    ws = mapping(z, c, truncation_psi=psi, truncation_cutoff=3)
    assert ws.shape == (3, 5, 8)
    torch.testing.assert_close(ws[:, 0], truncated, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ws[:, 2], truncated, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ws[:, 3], x, rtol=1e-5, atol=1e-5)


def test_modulated_conv_matches_per_sample_demodulated_convolution():
    torch.manual_seed(2)
    x, weight, styles = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3), torch.randn(2, 4)
    noise = torch.randn(2, 1, 8, 8)
    out = modulated_conv2d(x, weight, styles, noise=noise, padding=1)
    for i in range(2):
        w = weight * styles[i].reshape(1, 4, 1, 1)
        w = w / torch.sqrt((w ** 2).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        expected = F.conv2d(x[i:i + 1], w, padding=1) + noise[i]
        torch.testing.assert_close(out[i:i + 1], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv_of_a_frozen_weight_gives_the_fused_result_and_gradients(up):
    # Fitting a latent records gradients through frozen weights: that takes the unfused form, which must give
    # the same output and the same gradients (to the styles and the input) as the fused one.
    torch.manual_seed(3)
    x, styles, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4), torch.randn(2, 1, 8 * up, 8 * up)
    filt = make_resample_filter()

    def run(weight_trains: bool):
        weight = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(4)).requires_grad_(weight_trains)
        xs, ss = x.clone().requires_grad_(True), styles.clone().requires_grad_(True)
        out = modulated_conv2d(xs, weight, ss, noise=noise, up=up, padding=1, resample_filter=filt)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        return out.detach(), xs.grad, ss.grad

    for fused, unfused in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(unfused, fused, rtol=1e-5, atol=1e-5)


def test_upsampling_conv_equals_fir_upsample_then_convolve_in_the_interior():
    # A transposed conv followed by the FIR filter is, as a linear shift-invariant system, the same as
    # FIR-upsampling first and convolving with the spatially flipped kernel; only the borders differ.
    torch.manual_seed(3)
    x, weight, styles = torch.randn(1, 3, 8, 8), torch.randn(5, 3, 3, 3), torch.randn(1, 3)
    f = make_resample_filter()
    out = modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=f)
    assert out.shape == (1, 5, 16, 16)
    w = weight * styles.reshape(1, 3, 1, 1)
    w = w / torch.sqrt((w ** 2).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
    expected = F.conv2d(upsample2d(x, f), w.flip([2, 3]), padding=1)
    torch.testing.assert_close(out[..., 3:-3, 3:-3], expected[..., 3:-3, 3:-3], rtol=1e-4, atol=1e-4)


def test_fir_upsample_of_a_constant_image_is_constant_inside():
    up = upsample2d(torch.full((1, 2, 6, 6), 3.0), make_resample_filter())
    assert up.shape == (1, 2, 12, 12)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full((1, 2, 8, 8), 3.0))


def test_synthesis_layer_const_noise_and_bias_activation():
    torch.manual_seed(4)
    layer = SynthesisLayer(4, 6, w_dim=8, resolution=8)
    layer.noise_strength.data.fill_(0.5)
    layer.bias.data.normal_()
    x, w = torch.randn(2, 4, 8, 8), torch.randn(2, 8)
    styles = _reference_fc(layer.affine, w, 1.0, lrelu=False)
    pre = modulated_conv2d(x, layer.weight, styles, padding=1) + layer.noise_const * 0.5
    expected = F.leaky_relu(pre + layer.bias.reshape(1, -1, 1, 1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(layer(x, w, noise_mode="const"), expected, rtol=1e-5, atol=1e-5)
    assert layer.affine.bias.data.eq(1).all(), "styles start at 1 (bias_init=1)"


def test_torgb_is_modulated_without_demodulation():
    torch.manual_seed(5)
    layer = ToRGBLayer(4, 3, w_dim=8)
    layer.bias.data.normal_()
    x, w = torch.randn(1, 4, 5, 5), torch.randn(1, 8)
    styles = _reference_fc(layer.affine, w, 1.0, lrelu=False) / 2  # weight gain 1/sqrt(4)
    expected = torch.einsum("oi,nihw->nohw", layer.weight[:, :, 0, 0], x * styles.reshape(1, 4, 1, 1))
    torch.testing.assert_close(layer(x, w), expected + layer.bias.reshape(1, 3, 1, 1), rtol=1e-5, atol=1e-5)


def _bilinear(plane: torch.Tensor, u: float, v: float) -> torch.Tensor:
    """plane (C, H, W), u along width, v along height in [-1, 1], align_corners=False, zero outside."""
    c, h, w = plane.shape
    px, py = ((u + 1) * w - 1) / 2, ((v + 1) * h - 1) / 2
    x0, y0 = math.floor(px), math.floor(py)
    total = torch.zeros(c)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < w and 0 <= yi < h:
                total += weight * plane[:, yi, xi]
    return total


@pytest.mark.parametrize("plane_axes", [EG3D_PLANE_AXES, ORTHOGONAL_PLANE_AXES])
def test_triplane_sampling_matches_bilinear_formula(plane_axes):
    torch.manual_seed(6)
    planes = torch.randn(1, 3, 4, 6, 6)
    points = torch.tensor([[[0.1, -0.2, 0.3], [-0.45, 0.05, 0.2], [0.6, 0.0, 0.0]]])
    box_warp = 1.0
    out = sample_triplane(planes, points, plane_axes, box_warp)
    assert out.shape == (1, 3, 3, 4)
    for m, point in enumerate(points[0].tolist()):
        for p, (a, b) in enumerate(plane_axes):
            expected = _bilinear(planes[0, p], point[a] * 2 / box_warp, point[b] * 2 / box_warp)
            torch.testing.assert_close(out[0, p, m], expected, rtol=1e-5, atol=1e-5)


def test_the_mean_over_planes_is_sampled_in_grid_samples_layout_with_the_same_values_and_gradients():
    torch.manual_seed(8)
    planes, points = torch.randn(1, 3, 4, 6, 6), torch.rand(1, 7, 3) - 0.5
    weights = torch.linspace(-1, 1, 7 * 4).reshape(1, 7, 4)
    results = []
    for sample in (lambda p: sample_triplane(p, points, EG3D_PLANE_AXES, 1.0).mean(dim=1),
                   lambda p: sample_triplane_mean(p, points, EG3D_PLANE_AXES, 1.0)):
        source = planes.clone().requires_grad_(True)
        mean = sample(source)
        (mean * weights).sum().backward()
        results.append((mean.detach(), source.grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-6, atol=1e-6)


def test_eg3d_planes_have_no_yz_plane():
    assert EG3D_PLANE_AXES == ((0, 1), (0, 2), (2, 0))


def test_decoder_matches_reference_formula():
    torch.manual_seed(7)
    decoder = OSGDecoder(32, 64, 32)
    for p in decoder.parameters():
        p.data.normal_()
    features = torch.randn(2, 3, 10, 32)
    out = decoder(features)
    mean = features.mean(dim=1)
    hidden = F.softplus(_reference_fc(decoder.net[0], mean.reshape(-1, 32), 1.0, lrelu=False))
    raw = _reference_fc(decoder.net[2], hidden, 1.0, lrelu=False).reshape(2, 10, 33)
    torch.testing.assert_close(out["sigma"], raw[..., :1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["rgb"], torch.sigmoid(raw[..., 1:]) * 1.002 - 0.001, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in decoder.parameters()) == 4257


def test_compositing_matches_front_to_back_loop():
    torch.manual_seed(8)
    depths = torch.sort(torch.rand(1, 2, 7, 1) * 1.0 + 2.25, dim=2).values
    colors, sigmas = torch.rand(1, 2, 7, 3), torch.randn(1, 2, 7, 1) * 3
    rgb, depth, weights = composite(colors, sigmas, depths)
    for ray in range(2):
        transmittance, acc_rgb, acc_depth, acc_w = 1.0, torch.zeros(3), 0.0, 0.0
        for i in range(6):
            density = F.softplus((sigmas[0, ray, i] + sigmas[0, ray, i + 1]) / 2 - 1)
            alpha = 1 - torch.exp(-density * (depths[0, ray, i + 1] - depths[0, ray, i]))
            w = alpha * transmittance
            acc_rgb = acc_rgb + w * (colors[0, ray, i] + colors[0, ray, i + 1]) / 2
            acc_depth = acc_depth + w * (depths[0, ray, i] + depths[0, ray, i + 1]) / 2
            acc_w = acc_w + w
            transmittance = transmittance * (1 - alpha + 1e-10)
        torch.testing.assert_close(rgb[0, ray], acc_rgb * 2 - 1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(depth[0, ray], (acc_depth / acc_w).reshape(1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(weights[0, ray].sum(), acc_w.reshape(()), rtol=1e-5, atol=1e-5)


def test_uniform_samples_midpoints_are_deterministic_and_jittered_samples_stay_in_their_bins():
    mid = uniform_depths(1, 4, 2.25, 3.3, 48, deterministic=True, device=torch.device("cpu"))
    delta = (3.3 - 2.25) / 47
    torch.testing.assert_close(mid[0, 0, :, 0], torch.linspace(2.25, 3.3, 48) + delta / 2)
    jittered = uniform_depths(1, 4, 2.25, 3.3, 48, deterministic=False, device=torch.device("cpu"))
    offset = jittered[0, :, :, 0] - torch.linspace(2.25, 3.3, 48)
    assert offset.min() >= 0 and offset.max() <= delta


def test_importance_samples_concentrate_where_the_weight_is():
    depths = uniform_depths(1, 1, 2.0, 3.0, 33, deterministic=True, device=torch.device("cpu"))
    weights = torch.zeros(1, 1, 32, 1)
    weights[0, 0, 20] = 1.0  # all mass in the interval around depth ~2.64
    fine = importance_depths(depths, weights, 64, deterministic=True)
    peak = 0.5 * (depths[0, 0, 20, 0] + depths[0, 0, 21, 0])
    near = ((fine - peak).abs() < 0.1).float().mean()
    assert near > 0.6
    assert fine.min() >= depths.min() and fine.max() <= depths.max()
    assert torch.equal(fine, importance_depths(depths, weights, 64, deterministic=True))


def test_frontal_camera_rays_point_at_the_pivot_with_the_right_field_of_view():
    c2w = torch.tensor([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1.0]])[None]
    k = torch.tensor([[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1.0]])[None]
    origins, dirs = pixel_rays(c2w, k, 64)
    assert torch.allclose(origins, torch.tensor([0, 0, 2.7]).expand_as(origins))
    centre = dirs[0].reshape(64, 64, 3)[31:33, 31:33].mean(dim=(0, 1))
    torch.testing.assert_close(centre / centre.norm(), torch.tensor([0.0, 0.0, -1.0]), atol=1e-4, rtol=0)
    # Leftmost column centre: u = 0.5/64, tan(angle) = (0.5 - u) / f; it looks toward world -x; top row toward +y.
    row = dirs[0].reshape(64, 64, 3)
    left, top = row[32, 0], row[0, 32]
    assert left[0] < 0 and top[1] > 0
    torch.testing.assert_close(-left[0] / -left[2], torch.tensor((0.5 - 0.5 / 64) / 4.2647), rtol=1e-4, atol=0)


def test_superresolution_uses_only_the_last_w():
    torch.manual_seed(9)
    sr = SuperResolution("hybrid8x_dc", feature_channels=32, w_dim=16)
    rgb, feats, ws = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 32, 64, 64), torch.randn(1, 14, 16)
    out = sr(rgb, feats, ws)
    assert out.shape == (1, 3, 512, 512)
    ws2 = ws.clone()
    ws2[:, :-1] = torch.randn(1, 13, 16)
    torch.testing.assert_close(sr(rgb, feats, ws2), out)


@pytest.mark.parametrize("kind,size_in,size_out", [("hybrid4x", 64, 256), ("hybrid2x", 64, 128)])
def test_smaller_superresolution_modules(kind, size_in, size_out):
    sr = SuperResolution(kind, feature_channels=32, w_dim=16)
    out = sr(torch.zeros(1, 3, size_in, size_in), torch.zeros(1, 32, size_in, size_in), torch.randn(1, 5, 16))
    assert out.shape == (1, 3, size_out, size_out)


def test_aware3d_context_pools_each_other_plane_along_the_missing_axis():
    # Orthogonal planes: xy (width x, height y), xz (width x, height z), zy (width z, height y).
    planes = torch.randn(1, 3, 2, 4, 4)
    ctx = aware3d_context(planes, ORTHOGONAL_PLANE_AXES)
    assert ctx.shape == (1, 3, 6, 4, 4)
    xy, xz, zy = planes[0]
    # On plane xy (lacks z): xz averaged over z (its height) gives a line over x (xy's width).
    torch.testing.assert_close(ctx[0, 0, 2:4], xz.mean(dim=1, keepdim=True).expand(2, 4, 4))
    # zy averaged over z (its width) gives a line over y (xy's height).
    torch.testing.assert_close(ctx[0, 0, 4:6], zy.mean(dim=2, keepdim=True).expand(2, 4, 4))
    # On plane zy (lacks x): xy averaged over x (its width) is a line over y, zy's height.
    torch.testing.assert_close(ctx[0, 2, 2:4], xy.mean(dim=2, keepdim=True).expand(2, 4, 4))
    torch.testing.assert_close(ctx[0, 0, :2], xy)


def test_aware3d_needs_three_distinct_planes():
    with pytest.raises(Exception, match="3D-aware"):
        GeneratorConfig(aware3d_layers=1, plane_axes=EG3D_PLANE_AXES)


def tiny_config(**overrides) -> GeneratorConfig:
    base = {"name": "tiny", "z_dim": 8, "w_dim": 16, "triplane_resolution": 16, "triplane_channels": 8,
            "channel_base": 256, "channel_max": 32, "plane_axes": ORTHOGONAL_PLANE_AXES, "aware3d_layers": 1,
            "decoder_hidden": 16, "decoder_output_dim": 8, "superresolution": "hybrid2x", "img_resolution": 128,
            "rendering": RenderingConfig(depth_resolution=8, depth_resolution_importance=8,
                                         neural_rendering_resolution=16)}
    base.update(overrides)
    return GeneratorConfig(**base)


def test_full_generator_is_deterministic_and_shaped():
    torch.manual_seed(10)
    generator = TriPlaneGenerator(tiny_config()).eval()
    z = torch.randn(2, 8)
    c = torch.tensor([[1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1,
                       4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]] * 2)
    with torch.no_grad():
        a, b = generator(z, c), generator(z, c)
    assert a["planes"].shape == (2, 3, 8, 16, 16)
    assert a["image"].shape == (2, 3, 128, 128) and a["image_raw"].shape == (2, 3, 16, 16)
    assert a["image_depth"].shape == (2, 1, 16, 16)
    for key in ("image", "image_raw", "image_depth", "image_mask"):
        assert torch.equal(a[key], b[key]), key
    assert (a["image_depth"] >= 2.25).all() and (a["image_depth"] <= 3.3 + 1e-5).all()
    assert (a["image_mask"] >= 0).all() and (a["image_mask"] <= 1 + 1e-5).all()


def test_aware3d_conv_equals_a_convolution_of_plane_and_context_away_from_edges():
    from inference.core.networks.aware3d import Aware3DConv
    torch.manual_seed(11)
    conv = Aware3DConv(2, 3, ORTHOGONAL_PLANE_AXES)
    conv.bias.data.normal_()
    planes = torch.randn(2, 3, 2, 8, 8)
    ctx = aware3d_context(planes, ORTHOGONAL_PLANE_AXES).reshape(2, 18, 8, 8)
    expected = F.conv2d(ctx, conv.weight * conv.weight_gain, conv.bias, padding=1, groups=3).reshape(2, 3, 3, 8, 8)
    torch.testing.assert_close(conv(planes)[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_high_resolution_branch_needs_a_power_of_two_multiple_and_3d_aware_convolutions():
    with pytest.raises(Exception, match="hires_triplane_resolution"):
        tiny_config(hires_triplane_resolution=24)
    with pytest.raises(Exception, match="hires_triplane_resolution"):
        tiny_config(hires_triplane_resolution=16)
    with pytest.raises(Exception, match="3D-aware"):
        tiny_config(hires_triplane_resolution=32, aware3d_layers=0)


def test_an_untrained_high_resolution_branch_is_the_bilinearly_upsampled_base_and_the_2d_branch_reads_the_base():
    torch.manual_seed(12)
    generator = TriPlaneGenerator(tiny_config(hires_triplane_resolution=64)).eval()
    for parameter in generator.triplane_upsampler.layers.parameters():   # hidden layers: anything
        parameter.data.normal_()
    ws = generator.mapping(torch.randn(1, 8), torch.zeros(1, 25))
    with torch.no_grad():
        base = generator.synthesize_planes(ws, hires=False)
        fine = generator.synthesize_planes(ws)
        c = torch.tensor([[1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1,
                           4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1.0]])
        two_d = generator.render_2d(ws, c)["image"]
        assert torch.equal(two_d, generator.render(base, ws, c)["image"])
    assert base.shape == (1, 3, 8, 16, 16) and fine.shape == (1, 3, 8, 64, 64)
    expected = F.interpolate(base.reshape(1, 24, 16, 16), scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(fine.reshape(1, 24, 64, 64), expected)
    generator.triplane_upsampler.to_detail.weight.data.normal_()
    with torch.no_grad():
        assert not torch.allclose(generator.synthesize_planes(ws), fine)
