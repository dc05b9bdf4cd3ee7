"""Keeping the photo's detail across an edit: the photo's residual re-aligned to the edited face in its own view.

A photo's local detail (the skin, freckles, stubble the latent code cannot hold) is known only in the photo's
view of the UNEDITED face. When an edit moves the surface (a smile, an open jaw), that detail must move with
it, as E3DGE's hybrid alignment and GOAE's feature-difference alignment do for their features:

    in the photo's crop camera, render the unedited face R_u and the edited face R_e (colour, depth, opacity)
    flow F: edited pixel -> where the same surface point is in the unedited view; guided by the model's own
            68 landmarks of both latents (a thin-plate spline) when it has a landmark regressor, refined by
            dense optical flow between the two renders (colour and depth shading), smoothed, with sub-pixel
            motions (optical flow's noise on smooth renders) and pixels the edit leaves unchanged set to zero
    mask M (occlusion-aware mixing): 1 where the edited pixel shows surface the photo saw, 0 where it does not
            (a mouth that opened, a side that turned into view: the forward and backward flows disagree, the
            depth jumps, or the point was off the head), and a feathered ramp between
    aligned photo P_e = R_e + M * warp(P - R_u, F)

Only the residual moves, never the photo itself, so where M = 0 the aligned photo is exactly the edited render:
the unedited mouth cannot be pasted over an edited one. Everything is in the crop's frame (pixel i covers
[i, i + 1), so centres sit at i + 0.5); the crop camera's intrinsics are normalised, so the flow found between
small renders applies to a crop of any size. One view at a time: a face fitted to several photos aligns each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from scipy.interpolate import RBFInterpolator

from ..asset.bake import PhotoView
from ..core.networks.local_detail import LocalDetail, ViewsDetail
from ..core.networks.triplane import TriPlaneGenerator
from ..core.render.rays import project_pixels
from ..fitting.invert import face_mask, use_weights
from ..fitting.landmarks import LandmarkRegressor
from ..fitting.pipeline import FaceFit, feathered, photo_detail
from ..ground.cameras import project_points
from ..preprocess.align import Alignment, crop_photo
from ..preprocess.decode import Photo, load_photo

MAX_BAKE_CROP = 2048   # px: the largest crop of the photo made for the texture (see `bake_crop_size`)


@dataclass(frozen=True)
class AlignOptions:
    resolution: int = 128            # px of the two renders the correspondence is found between
    consistency_px: float = 1.5      # forward-backward disagreement (render px) beyond which a match is refused
    depth_jump: float = 0.02         # world units (8.5 mm in the default model): an edited point this much nearer
                                     # or farther than its match was is another surface (a mouth's inside)
    erode_px: int = 1                # render px around unmatched pixels where M is 0 too (edges are least sure)
    feather_px: float = 1.5          # render px over which M then rises to 1
    landmark_smoothing: float = 2.0  # thin-plate spline smoothing (render px^2): the landmarks are regressed
    flow_weight_depth: float = 0.5   # share of depth shading in the images the dense flow compares
    still_colour: float = 0.02       # [-1, 1] units: a render pixel whose colour the edit changes less ...
    still_depth: float = 0.0025      # ... and whose depth less (world units, 1 mm) did not move
    still_ramp_px: float = 3.0       # render px over which the flow fades to zero away from what moved
    flow_smoothing_px: float = 2.0   # Gaussian sigma (render px) over the dense flow: a face moves smoothly
    flow_floor_px: float = 0.35      # render px: smaller motions are optical flow's noise on smooth renders
                                     # (zeroed; full motion from twice this), which would only blur the detail


@dataclass
class ViewRender:
    """A face rendered in the photo's camera: colour (1, 3, r, r) in [-1, 1], depth (1, 1, r, r) distance along
    the ray, mask (1, 1, r, r) opacity."""

    colour: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


@dataclass
class EditCorrespondence:
    """Where each pixel of the edited face was before the edit, in the photo's crop frame at render size r.

    flow (r, r, 2) float32: edited pixel -> displacement (px) to the same surface point in the unedited view;
    weight (r, r) float32 in [0, 1]: the occlusion-aware mask M (0 where the photo never saw that surface);
    before, after: the two renders. Every method resamples to any crop size S, so one correspondence serves
    the local-detail crop and a full-resolution crop for the texture alike."""

    flow: np.ndarray
    weight: np.ndarray
    before: ViewRender
    after: ViewRender

    @property
    def resolution(self) -> int:
        return self.flow.shape[0]

    def flow_at(self, size: int) -> torch.Tensor:
        """(1, 2, S, S) float32: the flow upsampled to an S px crop, in that crop's pixels."""
        flow = torch.from_numpy(self.flow).permute(2, 0, 1)[None]
        if size != self.resolution:
            flow = F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False)
        return flow * (size / self.resolution)

    def weight_at(self, size: int) -> torch.Tensor:
        """(1, 1, S, S) float32: M at an S px crop; exactly 0 wherever the render-size M is 0 around a pixel."""
        weight = torch.from_numpy(self.weight)[None, None]
        return F.interpolate(weight, size=(size, size), mode="bilinear", align_corners=False) \
            if size != self.resolution else weight

    def warp(self, image: torch.Tensor) -> torch.Tensor:
        """An image of the unedited view (N, C, S, S) -> the same content where it lies in the edited view."""
        return warp_image(image, self.flow_at(image.shape[-1]).to(image))

    def transfer(self, photo: torch.Tensor) -> torch.Tensor:
        """The photo crop (1, 3, S, S) in [-1, 1] -> the aligned crop R_e + M * warp(P - R_u), same size."""
        size = photo.shape[-1]
        before = _resize(self.before.colour, size).to(photo)
        after = _resize(self.after.colour, size).to(photo)
        return transfer_residual(photo, before, after, self.flow_at(size).to(photo),
                                 self.weight_at(size).to(photo))


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)


def warp_image(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: out(x) = image(x + flow(x)), bilinear, borders repeated. image (N, C, S, S),
    flow (1 or N, 2, S, S) in pixels (x right, y down)."""
    size = image.shape[-1]
    centres = torch.arange(size, dtype=flow.dtype, device=flow.device) + 0.5
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    position = torch.stack([x, y])[None] + flow                       # (N, 2, S, S) crop pixels
    grid = (position / size * 2 - 1).permute(0, 2, 3, 1)
    return F.grid_sample(image, grid.expand(len(image), -1, -1, -1), mode="bilinear", padding_mode="border",
                         align_corners=False)


def transfer_residual(photo: torch.Tensor, before: torch.Tensor, after: torch.Tensor, flow: torch.Tensor,
                      weight: torch.Tensor) -> torch.Tensor:
    """The feature-difference transfer: after + weight * warp(photo - before, flow). photo, before, after
    (1, 3, S, S) in one camera; flow (1, 2, S, S) px, edited -> unedited; weight (1, 1, S, S) in [0, 1].
    Where weight is 0 the result is `after` exactly: nothing of the photo can appear there."""
    return after + weight * warp_image(photo - before, flow)


@torch.no_grad()
def render_view(generator: TriPlaneGenerator, w_plus: torch.Tensor, tuned: dict[str, torch.Tensor] | None,
                camera: torch.Tensor, resolution: int) -> ViewRender:
    """w_plus (1, num_ws, w_dim) through the face's tuned weights, seen by camera label (1, 25) at r px (the
    direct 3D branch: no super-resolution, so depth and colour share the pixels)."""
    with use_weights(generator, tuned):
        out = generator.render(generator.synthesize_planes(w_plus), w_plus, camera, resolution=resolution,
                               super_resolve=False)
    return ViewRender(colour=out["image_raw"].float().cpu(), depth=out["image_depth"].float().cpu(),
                      mask=out["image_mask"].float().cpu())


def landmark_flow(points_from: np.ndarray, points_to: np.ndarray, resolution: int,
                  smoothing: float = 2.0) -> np.ndarray:
    """A dense (r, r, 2) flow taking each pixel of the view where `points_from` (K, 2) lie towards where
    `points_to` (K, 2) lie (both in render pixels): a thin-plate spline through the pairs, pinned to zero
    motion along the image border so that it does not extrapolate a mouth's motion across the whole head."""
    border = np.linspace(0.0, resolution, 9)
    ring = np.concatenate([np.stack([border, np.zeros(9)], 1), np.stack([border, np.full(9, resolution)], 1),
                           np.stack([np.zeros(7), border[1:-1]], 1),
                           np.stack([np.full(7, resolution), border[1:-1]], 1)])
    sources = np.concatenate([points_from, ring])
    motion = np.concatenate([points_to - points_from, np.zeros_like(ring)])
    spline = RBFInterpolator(sources, motion, kernel="thin_plate_spline", smoothing=smoothing, degree=1)
    centres = np.arange(resolution) + 0.5
    x, y = np.meshgrid(centres, centres)
    return spline(np.stack([x.ravel(), y.ravel()], 1)).reshape(resolution, resolution, 2).astype(np.float32)


def flow_image(view: ViewRender, depth_share: float) -> np.ndarray:
    """(r, r) uint8 for optical flow: the colour's luminance mixed with the depth map's shading (a light from
    the camera's upper left), so that a face the model paints smoothly still has structure to match."""
    colour = (view.colour[0].clamp(-1, 1) + 1) / 2
    luminance = (0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]).numpy()
    depth, mask = view.depth[0, 0].numpy().astype(np.float64), view.mask[0, 0].numpy()
    gy, gx = np.gradient(depth)
    # A pixel spans about depth / (focal * r) world units; 4.3 is a typical normalised focal length: the scale
    # of the normals matters little, only that ridges (nose, lips, chin) shade differently from cheeks.
    spacing = np.maximum(depth, 1e-3) / (4.3 * depth.shape[0])
    normal = np.stack([-gx / spacing, -gy / spacing, np.ones_like(depth)])
    normal /= np.linalg.norm(normal, axis=0, keepdims=True)
    light = np.array([-0.4, -0.5, 0.77])
    shading = np.clip(np.tensordot(light / np.linalg.norm(light), normal, axes=1), 0, 1) * (mask > 0.5)
    mixed = (1 - depth_share) * luminance + depth_share * shading
    return np.clip(mixed * 255 + 0.5, 0, 255).astype(np.uint8)


def dense_flow(image_from: np.ndarray, image_to: np.ndarray, initial: np.ndarray | None = None) -> np.ndarray:
    """(r, r, 2) float32: DIS optical flow (OpenCV) from image_from to image_to ((r, r) uint8), starting from
    `initial` (r, r, 2) when given: image_from(x) ~ image_to(x + flow(x))."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = None if initial is None else np.ascontiguousarray(initial, dtype=np.float32)
    return dis.calc(image_from, image_to, flow)


def denoised(flow: np.ndarray, options: AlignOptions) -> np.ndarray:
    """(r, r, 2) flow smoothed (`flow_smoothing_px`) and with motions under `flow_floor_px` set to zero, rising
    to their full length at twice that."""
    smooth = np.stack([scipy.ndimage.gaussian_filter(flow[..., c], options.flow_smoothing_px) for c in range(2)], -1)
    length = np.linalg.norm(smooth, axis=-1, keepdims=True)
    floor = max(options.flow_floor_px, 1e-6)
    return (smooth * np.clip((length - floor) / floor, 0.0, 1.0)).astype(np.float32)


def sample_at(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """image (r, r[, C]) float32 read at x + flow(x) for every pixel x (bilinear, border repeated)."""
    size = flow.shape[0]
    x, y = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    return cv2.remap(np.ascontiguousarray(image, dtype=np.float32), x + flow[..., 0], y + flow[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def forward_backward_error(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """(r, r) px: how far x lands from itself after forward (a -> b) then backward (b -> a): 0 for a match."""
    return np.linalg.norm(forward + sample_at(backward, forward), axis=-1)


def occlusion_weight(forward: np.ndarray, backward: np.ndarray, before: ViewRender, after: ViewRender,
                     options: AlignOptions) -> np.ndarray:
    """The occlusion-aware mask M (r, r) in [0, 1] over the edited head. A pixel of the edited head is unmatched
    when it shows surface the photo never saw: it came from off the unedited head, the two flows disagree, or
    its depth jumps against where it came from (the inside of a mouth that opened). M is exactly 0 on and within
    `erode_px` of unmatched pixels and off the head, and rises to 1 over `feather_px` beyond."""
    on_head = after.mask[0, 0].numpy() > 0.5
    came_from_head = sample_at(before.mask[0, 0].numpy(), forward) > 0.5
    consistent = forward_backward_error(forward, backward) < options.consistency_px
    depth_before = sample_at(before.depth[0, 0].numpy(), forward)
    same_surface = np.abs(after.depth[0, 0].numpy() - depth_before) < options.depth_jump
    unmatched = on_head & ~(came_from_head & consistent & same_surface)
    if not unmatched.any():
        return on_head.astype(np.float32)
    # Only the edges of what was never seen are feathered: the head's own silhouette is left to the consumers,
    # which already ramp the photo down there (the bake's edge ramp, the local detail's opacity gate).
    distance = scipy.ndimage.distance_transform_edt(~unmatched)
    ramp = np.clip((distance - options.erode_px) / max(options.feather_px, 1e-6), 0.0, 1.0)
    return (ramp * on_head).astype(np.float32)


def still_pixels(before: ViewRender, after: ViewRender, options: AlignOptions) -> np.ndarray:
    """(r, r) float32 in [0, 1]: 1 where the edit changes neither colour nor depth of the render anywhere near
    (the surface did not move there, so the flow is exactly zero: an optical-flow estimate's sub-pixel noise
    would only blur the photo's detail), 0 where it does, with a ramp of `still_ramp_px` between."""
    colour = (after.colour[0] - before.colour[0]).abs().amax(0).numpy() > options.still_colour
    depth = (after.depth[0, 0] - before.depth[0, 0]).abs().numpy() > options.still_depth
    head = (after.mask[0, 0].numpy() > 0.5) | (before.mask[0, 0].numpy() > 0.5)
    silhouette = (after.mask[0, 0] - before.mask[0, 0]).abs().numpy() > 0.25
    moved = (head & (colour | depth)) | silhouette
    if not moved.any():
        return np.ones(moved.shape, np.float32)
    distance = scipy.ndimage.distance_transform_edt(~moved)
    return np.clip((distance - 1.0) / options.still_ramp_px, 0.0, 1.0).astype(np.float32)


@torch.no_grad()
def model_landmark_pixels(regressor: LandmarkRegressor, w_plus: torch.Tensor, yaw: float, camera: torch.Tensor,
                          resolution: int) -> np.ndarray:
    """The model's own 68 landmarks of w_plus (as dlib would find them from `yaw`) in render pixels (68, 2)."""
    points = regressor(w_plus.to(regressor.weight.device), yaw)
    return project_pixels(points.float().cpu(), camera.float().cpu(), resolution)[0].numpy().astype(np.float64)


@torch.no_grad()
def edit_correspondence(generator: TriPlaneGenerator, w_before: torch.Tensor, w_after: torch.Tensor,
                        tuned: dict[str, torch.Tensor] | None, camera: torch.Tensor,
                        regressor: LandmarkRegressor | None = None, yaw: float = 0.0,
                        options: AlignOptions = AlignOptions()) -> EditCorrespondence:
    """How an edit w_before -> w_after (1, num_ws, w_dim) moves the face in the view of camera label (1, 25)
    (a photo's crop camera at orbit `yaw`): both renders, the flow edited -> unedited and the mask M.

    With a landmark regressor the flow starts from the thin-plate spline through the model's landmarks of
    both latents (an edit can move a lip corner further than optical flow searches); dense optical flow
    between the renders refines it in both directions, and their disagreement marks what the photo never saw.
    """
    r = options.resolution
    before = render_view(generator, w_before, tuned, camera, r)
    after = render_view(generator, w_after, tuned, camera, r)
    if torch.equal(w_before, w_after):
        return EditCorrespondence(np.zeros((r, r, 2), np.float32), np.ones((r, r), np.float32), before, after)
    guess_forward = guess_backward = None
    if regressor is not None:
        points_before = model_landmark_pixels(regressor, w_before, yaw, camera, r)
        points_after = model_landmark_pixels(regressor, w_after, yaw, camera, r)
        guess_forward = landmark_flow(points_after, points_before, r, options.landmark_smoothing)
        guess_backward = landmark_flow(points_before, points_after, r, options.landmark_smoothing)
    image_before = flow_image(before, options.flow_weight_depth)
    image_after = flow_image(after, options.flow_weight_depth)
    moving = 1 - still_pixels(before, after, options)[..., None]
    forward = denoised(dense_flow(image_after, image_before, guess_forward), options) * moving
    backward = denoised(dense_flow(image_before, image_after, guess_backward), options) * moving
    return EditCorrespondence(forward, occlusion_weight(forward, backward, before, after, options), before, after)


# -- one view of a face, and a whole face ----------------------------------------------------------------------

@dataclass
class AlignedView:
    """One photo of a face re-aligned to its edited face: its local detail (None without the branch), the bake's
    view of it (None without the photo's pixels) and the correspondence both were made with."""

    detail: LocalDetail | None
    view: PhotoView | None
    correspondence: EditCorrespondence


def bake_crop_size(alignment: Alignment) -> int:
    """The crop size (px) for the texture: twice the photo's own resolution there (the bake resamples it once
    more, and an oversampled crop loses almost nothing to that), at least the fitted crop's, at most
    MAX_BAKE_CROP."""
    photo_px_per_crop_px = 1.0 / np.sqrt(abs(np.linalg.det(alignment.crop_from_photo[:2, :2])))
    return int(np.clip(round(2 * alignment.crop_size * photo_px_per_crop_px), alignment.crop_size, MAX_BAKE_CROP))


def crop_region(weights: np.ndarray, alignment: Alignment) -> Callable[[np.ndarray], np.ndarray]:
    """(S, S) weights over the alignment's crop (any S) -> a function of world points (N, 3) -> (N,) weights:
    the crop pixel each point projects to through the crop camera (0 behind the camera)."""
    size = weights.shape[0]

    def region(points: np.ndarray) -> np.ndarray:
        pixels, depth = project_points(points, alignment.cam2world, alignment.intrinsics, (size, size))
        col = np.clip(np.nan_to_num(np.floor(pixels[:, 0])), 0, size - 1).astype(np.int64)
        row = np.clip(np.nan_to_num(np.floor(pixels[:, 1])), 0, size - 1).astype(np.int64)
        return np.where(depth > 0, weights[row, col], 0.0)
    return region


def inside_photo(alignment: Alignment, size: int) -> np.ndarray:
    """(S, S) bool: the crop pixels whose centres fall inside the photo (the rest `crop_photo` fills with grey)."""
    photo_from_crop = np.linalg.inv(np.diag([size / alignment.crop_size] * 2 + [1.0]) @ alignment.crop_from_photo)
    centres = np.arange(size) + 0.5
    x, y = np.meshgrid(centres, centres)
    px = photo_from_crop[0, 0] * x + photo_from_crop[0, 1] * y + photo_from_crop[0, 2]
    py = photo_from_crop[1, 0] * x + photo_from_crop[1, 1] * y + photo_from_crop[1, 2]
    width, height = alignment.photo_size
    return (px >= 0) & (px < width) & (py >= 0) & (py < height)


@torch.no_grad()
def align_view(generator: TriPlaneGenerator, w_before: torch.Tensor, w_after: torch.Tensor,
               tuned: dict[str, torch.Tensor] | None, alignment: Alignment, camera: torch.Tensor,
               detail: LocalDetail | None, pixels: np.ndarray | None, regressor: LandmarkRegressor | None = None,
               options: AlignOptions = AlignOptions()) -> AlignedView:
    """Re-align one photo's detail to an edit w_before -> w_after (1, num_ws, w_dim): the photo's crop camera
    `alignment` with its label `camera` (1, 25), its local detail as fitted (None without the branch) and the
    decoded photo `pixels` (H, W, 3) uint8 (None: no bake view). A model without hair keeps the photo to the
    (warped) face mask, as `asset.result.photo_view` does."""
    device = w_after.device
    correspondence = edit_correspondence(generator, w_before, w_after, tuned, camera, regressor, alignment.yaw,
                                         options)
    new_detail = None
    if detail is not None:
        size = detail.photo.shape[-1]
        aligned = correspondence.transfer(detail.photo.float().cpu())
        region = correspondence.weight_at(size)
        if detail.region is not None:
            region = (correspondence.weight_at(detail.region.shape[-1])
                      * correspondence.warp(detail.region.float().cpu()))
        new_detail = photo_detail(generator, detail.net, w_after, tuned, aligned.to(device), camera.to(device),
                                  region.to(device))
    view = None
    if pixels is not None:
        size = bake_crop_size(alignment)
        crop = (torch.from_numpy(np.array(crop_photo(pixels, alignment, size))).permute(2, 0, 1)[None].float()
                / 127.5 - 1)
        aligned = correspondence.transfer(crop)
        weights = correspondence.weight_at(size)[0, 0].numpy() * inside_photo(alignment, size)
        if generator.config.extras.get("hair", True) is False:
            face = torch.from_numpy(face_mask(alignment.landmarks_crop * (size / alignment.crop_size), size))
            weights = weights * correspondence.warp(feathered(face[None, None].float(), size // 32))[0, 0].numpy()
        view = PhotoView(pixels=((aligned[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy(),
                         cam2world=alignment.cam2world, intrinsics=alignment.intrinsics,
                         region=crop_region(weights.astype(np.float32), alignment))
    return AlignedView(detail=new_detail, view=view, correspondence=correspondence)


@dataclass
class EditedPhotos:
    """A face's photos re-aligned to an edit: the local detail to render and colour the edited face with (None
    without the branch), the bake's views (main photo first; empty without pixels), one AlignedView per photo."""

    detail: LocalDetail | ViewsDetail | None
    views: list[PhotoView]
    aligned: list[AlignedView]


def follow_edit(generator: TriPlaneGenerator, fit: FaceFit, w_plus: torch.Tensor, photo: Photo | None,
                regressor: LandmarkRegressor | None = None, options: AlignOptions = AlignOptions()) -> EditedPhotos:
    """Carry a face's photo detail across the edit fit.w_plus -> w_plus, photo by photo (`align_view`); the bake
    views exist when `photo` (the main photo, decoded) is given; a face's other photos are read from their files."""
    others = list(getattr(fit, "views", []) or [])
    details = fit.detail.views if isinstance(fit.detail, ViewsDetail) else [fit.detail]
    aligned = []
    for index, view in enumerate([fit, *others]):
        offset = 0 if index == 0 else view.w_offset
        pixels = None
        if photo is not None:
            pixels = photo.pixels if index == 0 else (load_photo(view.photo).pixels if view.photo.is_file() else None)
        camera = torch.from_numpy(np.asarray(view.camera, np.float32))[None].to(w_plus.device)
        aligned.append(align_view(generator, fit.w_plus + offset, w_plus + offset, fit.tuned, view.alignment, camera,
                                  details[index] if index < len(details) else None, pixels, regressor, options))
    detail = None
    if fit.detail is not None:
        detail = ViewsDetail([a.detail for a in aligned]) if isinstance(fit.detail, ViewsDetail) else aligned[0].detail
    return EditedPhotos(detail=detail, views=[a.view for a in aligned if a.view is not None], aligned=aligned)
