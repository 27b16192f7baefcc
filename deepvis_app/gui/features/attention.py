"""Attention: where a vision transformer's tokens look, live. For a chosen block, each head's attention from the
class token (or from a clicked patch) to every patch, drawn over the frame as a mosaic of heads; the attention
rollout (Abnar & Zuidema 2020) from the first block up to the chosen one, over the frame (click a patch there to
look from it); and the class token's own values at the shown token layer, as a row apart from the grid.

The maps come with each frame (`FrameResult.attention`, recomputed by the worker from the frame's own forward):
this feature turns them on while its panel is shown (`state.attention`) and chooses the block and the query
(`state.attention_block`, `state.attention_patch`). Models without attention blocks get the panel with the reason.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QGridLayout, QLabel, QPushButton

from ...pipeline import FrameResult
from ...render import Grid, overlay_heat
from ...values import Layout
from ..feature import TOOLS, Feature, MenuItem, Panel
from ..widgets.attention_views import ClickCanvas, HeadsView, ValueStrip, WatchedPanel
from ..widgets.combo import ElidedCombo
from ..widgets.images import SIGNED_COLORMAP, make_lut
from ..widgets.inspector_pane import titled
from ..widgets.panel import assemble, control_row

HEAD_PX = 112  # each head's picture (the frame shrunk, the head's map over it)
HEADS_EVERY_S = 0.1  # the heads mosaic is redrawn at most this often (12 blends per redraw on ViT-B)


def head_maps(grid: Grid) -> list[np.ndarray]:
    """Each head's tile of the rendered heads grid as uint8 h x w, 0..255 (the grid keeps 0 for its borders and
    draws tiles in 1..255; each head is scaled to its own maximum)."""
    lay = grid.layout
    out = []
    for c in range(lay.channels):
        y, x = lay.tile_origin(c)
        tile = grid.image[y:y + lay.tile_h, x:x + lay.tile_w].astype(np.float32)
        out.append(np.clip(np.round((tile - 1.0) * 255.0 / 254.0), 0, 255).astype(np.uint8))
    return out


def head_pictures(rgb: np.ndarray, grid: Grid, size: int = HEAD_PX) -> list[np.ndarray]:
    """Each head's map over the (shrunk) frame; the map is enlarged without smoothing: one block per patch."""
    small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return [overlay_heat(small, cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST))
            for m in head_maps(grid)]


def token_names(count: int) -> list[str]:
    """What a token layer's extra tokens are, in timm / torchvision order."""
    if count == 2:
        return ["class token", "distillation token"]
    return ["class token"] + [f"register {i}" for i in range(1, count)]


def attention_support(vm) -> tuple[bool, str]:
    """(supported, why not): the model needs self-attention blocks and a patch grid of tokens."""
    from ...methods.attention import attention_modules

    if not attention_modules(vm.net):
        return False, (f"{vm.name} has no self-attention blocks: attention views are for vision transformers "
                       "(e.g. --model deit_tiny, timm:vit_small_patch16_224 or torchvision:vit_b_16)")
    if not any(i.layout is Layout.TOKENS and i.token_grid is not None for i in vm.layer_info):
        return False, (f"{vm.name}'s attention works without a ViT patch grid (e.g. Swin's windows): "
                       "per-head maps over the image are drawn for ViT-style models only")
    return True, ""


class AttentionFeature(Feature):
    name = "attention"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.supported, self.why = False, ""
        self.has_class_token = True
        self._prefix = 1
        self._default_patch: tuple[int, int] | None = None  # the query when the model has no class token
        self._heads_t = 0.0
        self.heads_res: FrameResult | None = None  # the frame the heads mosaic shows (redrawn at most every 0.1 s)
        self._strip_lut = make_lut(SIGNED_COLORMAP, border=False)
        self.panel = self._build()
        st = ctx.state
        st.events.attention_patch.connect(lambda *_: self._sync())
        st.events.attention_block.connect(lambda *_: self._sync())
        ctx.live.painted.connect(self.paint)
        ctx.live.model_changed.connect(self._model_changed)
        self._model_changed(ctx.vm, initial=True)

    # -- widgets
    def _build(self) -> WatchedPanel:
        w = WatchedPanel()
        w.shown.connect(self._visibility)
        w.hidden.connect(self._visibility)
        self.block_box = ElidedCombo()  # a squeezed name ends in "...", not cut through a letter
        # as narrow as a short name: a long module name must not widen a small screen's dock past its edge
        self.block_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.block_box.setMinimumContentsLength(18)
        self.block_box.setToolTip("the block whose heads are drawn; the rollout runs from the first block up to it")
        self.block_box.currentIndexChanged.connect(lambda _i: self.set_block(self.block_box.currentData() or ""))
        self.query_label = QLabel("query: class token")
        self.class_button = QPushButton("class token")
        self.class_button.setToolTip("look from the class token again (click a patch on the rollout to look from "
                                     "that patch)")
        self.class_button.clicked.connect(lambda: self.set_patch(None))
        self.heads = HeadsView("waiting for the next frame...")
        self.heads.setToolTip("each head's attention from the query token to every patch, over the frame (one block "
                              "per patch; each head scaled to its own maximum, said in its label)")
        self.rollout = ClickCanvas("waiting for the next frame...", smooth=True, min_size=80)
        self.rollout.setToolTip("attention rollout: how much the query draws on each patch through every block up "
                                "to the chosen one (heads averaged, residual added). Click a patch to look from it")
        self.rollout.clicked.connect(self._rollout_clicked)
        self.strip = ValueStrip(self._strip_lut)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.RichText)
        body = QGridLayout()
        self.heads_box = titled("heads", self.heads)
        self.rollout_box = titled("rollout (click a patch)", self.rollout)
        body.addWidget(self.heads_box, 0, 0)
        body.addWidget(self.rollout_box, 0, 1)
        body.setColumnStretch(0, 3)
        body.setColumnStretch(1, 2)
        assemble(w, [control_row("block", self.block_box, self.query_label, self.class_button)], body,
                 [self.strip, self.note])
        return w

    # -- choices
    def set_block(self, block: str) -> None:
        self.ctx.state.attention_block = block

    def set_patch(self, patch: tuple[int, int] | None) -> None:
        if patch is None and not self.has_class_token:
            return
        self.ctx.state.attention_patch = patch

    def _rollout_clicked(self, fx: float, fy: float) -> None:
        res = self.ctx.live.shown
        att = res.attention if res is not None else None
        if att is None:
            return
        gh, gw = att.rollout_raw.shape
        self.set_patch((min(gh - 1, int(fy * gh)), min(gw - 1, int(fx * gw))))

    def open(self) -> None:
        self.show_panel("attention")

    def _visibility(self) -> None:
        """The maps are computed only while the panel is shown (and the model has them)."""
        on = self.supported and self.panel.isVisible()
        if self.ctx.state.attention != on and not self.ctx.live.closing:
            self.ctx.state.attention = on

    def _model_changed(self, vm, initial: bool = False) -> None:
        from ...methods.attention import attention_modules

        self.supported, self.why = attention_support(vm)
        tokens = [i for i in vm.layer_info if i.layout is Layout.TOKENS and i.token_grid is not None]
        self._prefix = max((i.prefix_tokens for i in tokens), default=0)  # class / distillation / register tokens
        self.has_class_token = self._prefix > 0
        grid = tokens[0].token_grid if tokens else (1, 1)
        self.strip.setVisible(bool(tokens))  # a model without token layers has no class token to show
        self._default_patch = None if self.has_class_token or not self.supported else (grid[0] // 2, grid[1] // 2)
        self.block_box.blockSignals(True)
        self.block_box.clear()
        if self.supported:
            names = [n for n, _ in attention_modules(vm.net)]
            self.block_box.addItem(f"last block ({names[-1]})", "")
            for n in names:
                self.block_box.addItem(n, n)
        self.block_box.blockSignals(False)
        for widget in (self.block_box, self.class_button, self.heads, self.rollout):
            widget.setEnabled(self.supported)
        if not initial or self._default_patch is not None:  # the old model's blocks and grid mean nothing now
            self.ctx.state.update(attention_block="", attention_patch=self._default_patch)
        self._visibility()
        self._sync()
        if not self.supported:
            self.heads.clear(self.why)
            self.rollout.clear("no attention rollout for this model")

    def _sync(self) -> None:
        st = self.ctx.state
        self.block_box.blockSignals(True)
        self.block_box.setCurrentIndex(max(0, self.block_box.findData(st.attention_block)))
        self.block_box.blockSignals(False)
        patch = st.attention_patch
        self.query_label.setText("query: class token" if patch is None else f"query: patch ({patch[0]}, {patch[1]})")
        self.class_button.setEnabled(self.supported and patch is not None and self.has_class_token)
        self.note.setText(self.why if not self.supported else "")

    # -- drawing
    def paint(self, res: FrameResult) -> None:
        if not self.panel.isVisible():
            return
        self._paint_prefix(res)
        if not self.supported:
            return
        att = res.attention
        if att is None:
            return
        now = time.perf_counter()
        if now - self._heads_t >= HEADS_EVERY_S or self.heads.count != att.heads.layout.channels:
            self._heads_t, self.heads_res = now, res
            maxima = att.heads.channel_max
            n = att.heads.layout.channels
            self.heads.set_tiles(head_pictures(res.image, att.heads),
                                 [f"head {i}  max {maxima[i]:.3f}" for i in range(n)],
                                 [f"{i}: {maxima[i]:.3f}" for i in range(n)])
        tokens = att.rollout_raw.size + self._prefix
        block = self.block_title(att.block)  # the module's name is in the block box (and would not wrap)
        title = self.heads_box.title_label
        title.setText(f"heads of {block}, from the {att.query} (each scaled to its max; even attention would be "
                      f"1/{tokens} = {1 / tokens:.3f})")
        title.setToolTip(f"{att.block}: {title.text()}")
        self.rollout.set_image(overlay_heat(res.image, att.rollout))
        gh, gw = att.rollout_raw.shape
        patch = self.ctx.state.attention_patch
        self.rollout.marker = None if patch is None else ((patch[1] + 0.5) / gw, (patch[0] + 0.5) / gh)
        self.rollout.caption = f"rollout to {block}"

    def block_title(self, block: str) -> str:
        """"block 12": a block's number among the model's attention blocks (its module name when not listed)."""
        index = self.block_box.findData(block)
        return f"block {index}" if index > 0 else block

    def _paint_prefix(self, res: FrameResult) -> None:
        """The extra tokens of the shown token layer, never mixed into the grid: one row of values each."""
        if res.prefix is None:
            info = self.ctx.vm.info(res.layer)
            why = "it has no class token" if info.layout is Layout.TOKENS else f"it is {info.layout.value}"
            self.strip.set_rows(None, [], f"class token: not on {res.layer} ({why})",
                                "show a token layer of the transformer (e.g. a block's output) to see its class token")
            return
        p, c = res.prefix.shape
        names = token_names(p)
        what = "class token" if p == 1 else f"{' + '.join(n.split(' token')[0] for n in names)} tokens"
        top = int(np.argmax(res.prefix[0]))
        scale = float(np.abs(res.prefix).max())
        self.strip.set_rows(res.prefix, names, f"{what}: {c} features of {res.layer} (the grid shows the patches)",
                            f"red > 0, blue < 0, scaled to \u00b1{scale:.3g}; the class token's largest feature is "
                            f"{top} ({res.prefix[0, top]:.3g})")

    # -- what the window gathers
    def panels(self) -> list[Panel]:
        return [Panel("attention", "Attention", self.panel, area="right", visible=False, tab_with=TOOLS)]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&Tools", self.action("Attention (vision transformers: heads, rollout)", self.open))]

    def reset(self) -> None:
        self.ctx.state.update(attention_block="", attention_patch=self._default_patch)

    def snapshot_state(self) -> dict:
        st = self.ctx.state
        return {"attention": {"on": st.attention, "block": st.attention_block,
                              "patch": list(st.attention_patch) if st.attention_patch else None}}

    def snapshot_images(self) -> dict:
        if self.panel.isVisible() and self.rollout.array is not None:
            return {"attention_rollout": self.rollout.array}
        return {}
