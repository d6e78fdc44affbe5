"""The Qwen2.5-VL vision tower (transformers' `Qwen2_5_VisionTransformerPretrainedModel`).

Images of any size come as the processor's flattened patches: `Qwen2VLImageProcessor` resizes
each image to multiples of patch_size * spatial_merge_size, repeats it `temporal_patch_size`
times along time, and writes one row of C * T * P * P values per patch, the patches of each
image in spatial-merge-block order (the 2x2 patches that merge into one output token are
consecutive). All images of a call are concatenated into one sequence.

The tower:
  1. a 3-D convolution with stride = kernel, i.e. a matmul of each patch row (no bias);
  2. reordering into windows: merge units are grouped into windows of `window_size` pixels
     (windows at the right and bottom borders are partial), window after window;
  3. RMSNorm blocks with a gated SiLU MLP; 2-D RoPE over each patch's (row, col); every block
     except `fullatt_block_indexes` attends within its window, those within their image
     (each frame of a video);
  4. the patch merger: RMSNorm, concatenate each merge unit's 4 patches, MLP (GELU) to
     `out_dim`, and the merged tokens put back into the processor's order.

Attention over several images (and windows) is one block-diagonal boolean mask over the
concatenated sequence instead of transformers' cu_seqlens loop. Its layout (`WindowPlan`)
is computed in numpy from `grid_thw`, which must therefore be static Python ints at trace
time: a jitted caller passes it as a static argument and compiles once per distinct
combination of image sizes (bucket image sizes to bound the compilations). The masks are
dense bool[1, N, N]: 25 MB each for one 1000 x 1000 px image (N about 5,000 patches).

Axis legend: N patches of all images, M = N / spatial_merge_size**2 merged tokens, D width,
E out_dim, H head_dim.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgjax.models.attention import rope_inv_freq
from fgjax.models.config import RopeConfig, TransformerConfig, _check, register_config_type
from fgjax.models.layers import activation, dense, param
from fgjax.models.transformer import REMAT_POLICIES, Stack, make_norm


@register_config_type
@dataclasses.dataclass(frozen=True)
class Qwen25VisionConfig(TransformerConfig):
    """The Qwen2.5-VL vision tower; defaults are a tiny tower, `from_hf_config` in
    fgjax/hf/qwen_vision.py reads a checkpoint's. The real towers (3B, 7B, 72B) have width
    1280, depth 32, 16 heads, mlp_dim 3420, windows of 112 px, full attention in blocks
    (7, 15, 23, 31) and out_dim 2048, 3584 and 8192 (the decoder width).

    Input: f32[N, num_channels * temporal_patch_size * patch_size**2] patches and grid_thw;
    output: [M, out_dim] in the compute dtype, M = N / spatial_merge_size**2.
    """

    patch_size: int = 14
    temporal_patch_size: int = 2  # images are repeated along time to fill the 3-D kernel
    num_channels: int = 3
    spatial_merge_size: int = 2  # the merger joins merge x merge patches into one token
    # window side in input pixels, floored to whole merged tokens; None: no windows, every
    # block attends over its whole image (Qwen3-VL)
    window_size: int | None = 112
    fullatt_block_indexes: tuple[int, ...] = (1,)  # blocks attending over the whole image
    out_dim: int = 64  # the merger's output width (the decoder width; HF out_hidden_size)
    rope_theta: float = 10000.0  # base of the axial 2-D RoPE (HF vision rope_parameters)
    # training: every image resized to fixed_size x fixed_size px (a multiple of patch_size *
    # spatial_merge_size), one static grid for `run_rows`; None: native resolution only
    fixed_size: int | None = None
    norm: str = "rmsnorm"
    norm_eps: float = 1e-6
    mlp: str = "gated"
    act: str = "silu"
    qkv_bias: bool = True
    out_bias: bool = True
    mlp_bias: bool = True

    @property
    def merge_unit(self) -> int:
        """Patches per merged token."""
        return self.spatial_merge_size**2

    @property
    def window_tokens(self) -> int | None:
        """Merged tokens per window side (None: no windows)."""
        if self.window_size is None:
            return None
        return self.window_size // (self.patch_size * self.spatial_merge_size)

    @property
    def fixed_grid(self) -> tuple[int, int, int]:
        """(t, h, w) in patches of one image at fixed_size (its processor's image_grid_thw)."""
        _check(self.fixed_size is not None, "fixed_size is None: the tower has no fixed grid")
        side = self.fixed_size // self.patch_size
        return (1, side, side)

    @property
    def patch_dim(self) -> int:
        """Values per patch row of the processor's output."""
        return self.num_channels * self.temporal_patch_size * self.patch_size**2

    def validate(self) -> None:
        super().validate()
        _check(
            self.kv_heads == self.num_heads, "the Qwen2.5-VL tower has no grouped-query attention"
        )
        _check(
            self.dim_per_head % 4 == 0,
            f"head_dim={self.dim_per_head}: the 2-D RoPE needs a multiple of 4",
        )
        _check(
            self.window_size is None or self.window_tokens >= 1,
            f"window_size={self.window_size} is smaller than patch_size * spatial_merge_size "
            f"= {self.patch_size * self.spatial_merge_size}",
        )
        unit = self.patch_size * self.spatial_merge_size
        _check(
            self.fixed_size is None or (self.fixed_size >= unit and self.fixed_size % unit == 0),
            f"fixed_size={self.fixed_size} must be a positive multiple of patch_size * "
            f"spatial_merge_size = {unit}",
        )
        bad = [i for i in self.fullatt_block_indexes if not 0 <= i < self.depth]
        _check(not bad, f"fullatt_block_indexes {bad} are outside the {self.depth} blocks")


class WindowPlan(NamedTuple):
    """The static layout of one call, numpy arrays computed from grid_thw. "Window order" is
    the order the blocks see the patches in."""

    order: np.ndarray  # int[N]: input row of the patch at each position in window order
    positions: np.ndarray  # int[N, 2]: (row, col) of each patch in its image's grid (window order)
    frames: np.ndarray  # int[N]: frame (image, time step) of each patch: full-attention groups
    windows: np.ndarray  # int[N]: window of each patch: windowed-attention groups
    restore: np.ndarray  # int[M]: merged token (window order) at each output position


def check_grid_thw(cfg: Qwen25VisionConfig, grid_thw) -> tuple[tuple[int, int, int], ...]:
    """grid_thw (the processor's `image_grid_thw`, [images, 3] (t, h, w) in patches) as
    Python ints, checked."""
    try:
        grid = tuple(tuple(int(v) for v in row) for row in np.asarray(grid_thw).reshape(-1, 3))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        raise TypeError(
            "grid_thw must be static (Python ints or numpy) when tracing: pass it to jax.jit "
            "as a static argument (a tuple of (t, h, w) tuples)"
        ) from None
    m = cfg.spatial_merge_size
    bad = [g for g in grid if min(g) < 1 or g[1] % m or g[2] % m]
    _check(
        bool(grid) and not bad,
        f"grid_thw rows {bad or grid} are not positive (t, h, w) with h and w multiples of "
        f"spatial_merge_size={m}; pass the image processor's image_grid_thw",
    )
    return grid


def window_plan(cfg: Qwen25VisionConfig, grid_thw) -> WindowPlan:
    """The WindowPlan of images with grid_thw [(t, h, w), ...] (patches), as transformers'
    get_vision_window_index and get_vision_position_ids lay them out."""
    m, span = cfg.spatial_merge_size, cfg.window_tokens
    units, frames, windows, rows, cols = [], [], [], [], []
    first_unit = first_frame = first_window = 0
    for t, h, w in check_grid_thw(cfg, grid_thw):
        gh, gw = h // m, w // m  # merged tokens per column / row
        side = span or max(gh, gw)  # no windows: one per frame, the raster order kept
        nh, nw = -(-gh // side), -(-gw // side)  # windows per column / row
        f, i, j = (a.ravel() for a in np.meshgrid(*map(np.arange, (t, gh, gw)), indexing="ij"))
        window = (f * nh + i // side) * nw + j // side
        # window after window; within one, the merge units keep their raster order
        order = np.argsort(window, kind="stable")
        units.append(first_unit + order)
        frames.append(first_frame + f[order])
        windows.append(first_window + window[order])
        rows.append(i[order])
        cols.append(j[order])
        first_unit += t * gh * gw
        first_frame += t
        first_window += t * nh * nw
    units, rows, cols = (np.concatenate(a) for a in (units, rows, cols))
    di, dj = np.divmod(np.arange(cfg.merge_unit), m)  # a patch's place in its merge unit
    return WindowPlan(
        order=(units[:, None] * cfg.merge_unit + np.arange(cfg.merge_unit)).ravel(),
        positions=np.stack(
            [(rows[:, None] * m + di).ravel(), (cols[:, None] * m + dj).ravel()], -1
        ),
        frames=np.repeat(np.concatenate(frames), cfg.merge_unit),
        windows=np.repeat(np.concatenate(windows), cfg.merge_unit),
        restore=np.argsort(units),
    )


def split_sizes(cfg: Qwen25VisionConfig, grid_thw) -> list[int]:
    """Merged tokens per image: np.split(out, np.cumsum(sizes)[:-1]) gives each image's."""
    return [t * h * w // cfg.merge_unit for t, h, w in check_grid_thw(cfg, grid_thw)]


class PatchMerger(nnx.Module):
    """The tower's norm (Qwen2.5-VL: RMSNorm, Qwen3-VL: LayerNorm), then each merge unit's
    patches concatenated, Linear, GELU, Linear; `postshuffle` norms after the concatenation
    instead, over merge_unit * width features (Qwen3-VL's DeepStack mergers)."""

    def __init__(self, cfg: Qwen25VisionConfig, *, postshuffle: bool = False, rngs: nnx.Rngs):
        self.merged = cfg.width * cfg.merge_unit
        self.postshuffle = postshuffle
        kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype)
        norm_cfg = dataclasses.replace(cfg, width=self.merged) if postshuffle else cfg
        self.norm = make_norm(norm_cfg, rngs)
        self.fc1 = dense(rngs, self.merged, self.merged, ("vision_embed", "mlp"), **kw)
        self.fc2 = dense(rngs, self.merged, cfg.out_dim, ("mlp", "embed"), **kw)
        self.act = activation("gelu")

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [N, D], merge units consecutive -> [M, E]."""
        if self.postshuffle:
            x = self.norm(x.reshape(-1, self.merged))
        else:
            x = self.norm(x).reshape(-1, self.merged)
        return self.fc2(self.act(self.fc1(x)))


class Qwen25VisionTower(nnx.Module):
    """The Qwen2.5-VL vision tower; see the module docstring.

    Usage under jit (grid_thw static, a tuple of (t, h, w) tuples):
        run = nnx.jit(lambda model, x, grid: model(x, grid), static_argnums=2)
    """

    def __init__(self, cfg: Qwen25VisionConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        p, t = cfg.patch_size, cfg.temporal_patch_size
        init = nnx.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal", in_axis=(0, 1, 2, 3), out_axis=4
        )
        # the Conv3d kernel [C, T, P, P, D]: stride = kernel, so a matmul of each patch row
        self.patch_embed = param(
            rngs, init, (cfg.num_channels, t, p, p, cfg.width), cfg.params_dtype,
            ("channels", None, "patch", "patch", "embed"),
        )  # fmt: skip
        # only the blocks' construction (scanned or unrolled): `_blocks` runs them, since the
        # full-attention blocks take another mask than the windowed ones
        self.stack = Stack(cfg, rngs=rngs)
        self.merger = PatchMerger(cfg, rngs=rngs)

    def __call__(self, pixel_values: jax.Array, grid_thw) -> jax.Array:
        """pixel_values: f32[N, C * T * P * P], the processor's `pixel_values` of all images;
        grid_thw: [images, 3] static ints (t, h, w in patches), its `image_grid_thw`.
        Returns [M, E] in the compute dtype: the merged tokens of all images in input order,
        what transformers' `get_image_features` returns (concatenated; `split_sizes`)."""
        return self.run(pixel_values, window_plan(self.cfg, grid_thw))

    def run(self, pixel_values: jax.Array, plan: WindowPlan) -> jax.Array:
        """The tower on an explicit layout (`window_plan`); f32[N, C*T*P*P] -> [M, E]."""
        cfg = self.cfg
        if pixel_values.shape != (len(plan.order), cfg.patch_dim):
            raise ValueError(
                f"pixel_values has shape {pixel_values.shape}; grid_thw describes "
                f"{len(plan.order)} patches of {cfg.patch_dim} values"
            )
        dtype = cfg.compute_dtype
        kernel = self.patch_embed[...].reshape(cfg.patch_dim, cfg.width).astype(dtype)
        x = pixel_values[plan.order].astype(dtype) @ kernel  # [N, D] in window order
        x = self._blocks(x[None], self._rope(plan.positions), plan)[0]
        return self.merger(x)[plan.restore]

    def run_rows(self, pixel_values: jax.Array, *, stop_gradient: bool = False) -> jax.Array:
        """Images at the config's fixed_size, one per row: f32[B, N, C*T*P*P] (row b the
        processor's patches of one image) -> [B, M, E] in the compute dtype, row b that image's
        merged tokens. Every image has the same window plan, so the blocks run batched with
        [1, N, N] masks (not one mask over all B * N patches) and the rows shard over the
        batch axes. stop_gradient: no backward pass into the blocks (a frozen tower under a
        trained merger)."""
        cfg = self.cfg
        plan = window_plan(cfg, (cfg.fixed_grid,))
        if pixel_values.ndim != 3 or pixel_values.shape[1:] != (len(plan.order), cfg.patch_dim):
            raise ValueError(
                f"pixel_values has shape {pixel_values.shape}; images of {cfg.fixed_size} px "
                f"are [B, {len(plan.order)}, {cfg.patch_dim}]"
            )
        dtype = cfg.compute_dtype
        kernel = self.patch_embed[...].reshape(cfg.patch_dim, cfg.width).astype(dtype)
        x = pixel_values[:, plan.order].astype(dtype) @ kernel  # [B, N, D] in window order
        x = self._blocks(x, self._rope(plan.positions), plan)
        if stop_gradient:
            x = jax.lax.stop_gradient(x)
        merged = self.merger(x.reshape(-1, cfg.width))  # merge units never straddle two rows
        return merged.reshape(x.shape[0], -1, cfg.out_dim)[:, plan.restore]

    def _rope(self, positions: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """cos, sin [1, N, H]: the first half of each head rotates with the row, the second
        with the column (angles in float32, as transformers)."""
        inv_freq = rope_inv_freq(self.cfg.dim_per_head // 2, RopeConfig(theta=self.cfg.rope_theta))
        angles = jnp.asarray(positions, jnp.float32)[..., None] * jnp.asarray(inv_freq)
        angles = angles.reshape(1, len(positions), -1)  # [1, N, H/2]: rows' then columns'
        angles = jnp.concatenate([angles, angles], axis=-1)
        dtype = self.cfg.compute_dtype
        return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)

    def _blocks(self, x: jax.Array, rope, plan: WindowPlan, taps=()):
        """x: [1, N, D] through every block, each with its mask (scanned: a per-layer bool
        selects it, so one block body serves both kinds). Returns the last block's output,
        or with `taps` (increasing block indexes) (it, [each tapped block's output]); scanned,
        the blocks then run as one scan per stretch between taps."""
        cfg, stack = self.cfg, self.stack
        frames, windows = jnp.asarray(plan.frames), jnp.asarray(plan.windows)
        full_mask = (frames[:, None] == frames[None, :])[None]  # bool[1, N, N]
        full = [cfg.window_size is None or i in cfg.fullatt_block_indexes for i in range(cfg.depth)]
        window_mask = full_mask if all(full) else (windows[:, None] == windows[None, :])[None]

        def run_block(graphdef, state, x, mask):
            return nnx.merge(graphdef, state)(x, mask=mask, rope=rope)[0]

        if cfg.remat != "none":
            run_block = jax.checkpoint(
                run_block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers,
                static_argnums=(0,),
            )  # fmt: skip
        tapped = []
        if not cfg.scan_layers:
            for i in range(cfg.depth):
                x = run_block(*nnx.split(stack.blocks[i]), x, full_mask if full[i] else window_mask)
                if i in taps:
                    tapped.append(x)
            return (x, tapped) if taps else x
        graphdef, state = nnx.split(stack.blocks)

        def body(x, layer):
            state, is_full = layer
            # one mask for all blocks without windows (Qwen3-VL): no per-layer select
            mask = full_mask if all(full) else jnp.where(is_full, full_mask, window_mask)
            return run_block(graphdef, state, x, mask), None

        layers = (state, jnp.asarray(full))
        ends = [*(i + 1 for i in taps), cfg.depth]
        for start, end in zip([0, *ends[:-1]], ends):
            if start < end:
                stretch = jax.tree.map(lambda a, s=start, e=end: a[s:e], layers)
                x, _ = jax.lax.scan(body, x, stretch)
            tapped.append(x)
        return (x, tapped[:-1]) if taps else x
