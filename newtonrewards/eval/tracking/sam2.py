"""`sam2` tracker: SAM 2 video segmentation through transformers, prompted with the first-frame mask.

Weights load with `from_pretrained` from a hub id (needs the network or a filled HF cache) or a local folder that holds
both the model and its processor (`save_pretrained` of `Sam2VideoModel` and `Sam2VideoProcessor`). A frame is lost
when SAM 2's object score says the object is absent, or its mask is empty.
"""

from __future__ import annotations

import numpy as np
import torch

from newtonrewards.errors import UserError
from newtonrewards.eval.tracking import TrackResult, check_track_inputs, result_from_masks

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Sam2Tracker:
    """SAM 2 video tracker: frames uint8 [T, H, W, 3] and the frame-0 mask [H, W] -> TrackResult.

    model:     hub id or local folder with the model and its processor.
    device:    torch device for the model and the inference state ("cpu", "cuda").
    dtype:     "float32" | "bfloat16" | "float16".
    """

    def __init__(self, model: str = "facebook/sam2.1-hiera-tiny", device: str = "cpu", dtype: str = "float32"):
        from transformers import Sam2VideoModel, Sam2VideoProcessor

        if dtype not in DTYPES:
            raise UserError(f"tracker sam2: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        try:
            self.processor = Sam2VideoProcessor.from_pretrained(model)
            self.model = Sam2VideoModel.from_pretrained(model, dtype=DTYPES[dtype]).to(device).eval()
        except (OSError, ValueError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"tracker sam2: cannot load model {model!r}: {first_line}") from err
        self.device, self.dtype = device, DTYPES[dtype]

    @torch.inference_mode()
    def track(self, frames: np.ndarray, first_mask: np.ndarray) -> TrackResult:
        """Propagate the frame-0 mask through the clip; lost where SAM 2 scores the object absent."""
        frames, first_mask = check_track_inputs(frames, first_mask)
        T, H, W, _ = frames.shape
        session = self.processor.init_video_session(video=frames, inference_device=self.device, dtype=self.dtype)
        self.processor.add_inputs_to_inference_session(
            inference_session=session, frame_idx=0, obj_ids=1, input_masks=first_mask.astype(np.uint8)
        )
        masks = np.zeros((T, H, W), bool)
        lost = np.ones(T, bool)
        for output in self.model.propagate_in_video_iterator(inference_session=session, start_frame_idx=0):
            t = int(output.frame_idx)
            mask = self.processor.post_process_masks([output.pred_masks], [(H, W)], binarize=True)[0]
            masks[t] = mask.reshape(-1, H, W)[0].cpu().numpy().astype(bool)
            present = output.object_score_logits is None or float(output.object_score_logits.reshape(-1)[0]) > 0
            lost[t] = not present
        masks[0], lost[0] = first_mask, False
        return result_from_masks(masks, lost)
