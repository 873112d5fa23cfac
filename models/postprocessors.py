"""Turn raw model outputs into per-clip predictions (query selection, resizing, thresholding)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def select_video_query(pred_logits: Tensor) -> Tensor:
    """Index of the query slot with the highest time-averaged sigmoid score, per clip: [B, T, Q, K] -> [B]."""
    scores = pred_logits.sigmoid().mean(1).max(-1).values
    return scores.argmax(-1)


class VideoMaskPostProcess(nn.Module):
    """Ref-YTVOS protocol: one query per clip (time-averaged score), its masks resized to the original size.

    Unpadded clips (inference) are resized straight to the original size as upstream; padded clips (batched
    validation) are first upsampled to the padded input and cropped, so padding never leaks into the output.
    """

    def __init__(self, threshold: float = 0.5):
        super().__init__()
        self.threshold = threshold

    @torch.no_grad()
    def forward(self, outputs: dict[str, Any], sizes: list[tuple[int, int]],
                orig_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """sizes: resized unpadded (h, w) per clip; orig_sizes: (H, W). Returns probabilities and binary masks."""
        query = select_video_query(outputs["pred_logits"])
        results = []
        for b, (q, (h, w), (oh, ow)) in enumerate(zip(query.tolist(), sizes, orig_sizes)):
            logits = outputs["pred_masks"][b, :, q][None]
            grid_h, grid_w = logits.shape[-2:]
            if (grid_h, grid_w) != (-(-h // 4), -(-w // 4)):
                logits = F.interpolate(logits, size=(grid_h * 4, grid_w * 4), mode="bilinear", align_corners=False)
                logits = logits[:, :, :h, :w]
            probs = F.interpolate(logits, size=(oh, ow), mode="bilinear", align_corners=False)[0].sigmoid()
            score = outputs["pred_logits"][b, :, q].sigmoid().max(-1).values
            results.append({"query": torch.tensor(q), "scores": score, "probs": probs, "masks": probs > self.threshold})
        return results


def build_postprocessors(args: Any) -> dict[str, nn.Module]:
    return {"video": VideoMaskPostProcess(args.threshold)}
