"""The session's uploads, each with its latest segmentation: the app switches between them, and a
volume can be segmented again (another model) without uploading it again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Upload:
    volume_node: Any
    segmentation_node: Any = None
    model: str = ""  # the model of the segmentation, "" before one

    @property
    def title(self) -> str:
        return f"{self.volume_node.GetName()} — {self.model or 'not segmented'}"


class History:
    def __init__(self) -> None:
        self.uploads: list[Upload] = []
        self.current = -1

    def add(self, volume_node: Any) -> Upload:
        self.uploads.append(Upload(volume_node))
        self.current = len(self.uploads) - 1
        return self.uploads[-1]

    def select(self, index: int) -> Upload:
        if not 0 <= index < len(self.uploads):
            raise IndexError(f"no upload {index} in this session")
        self.current = index
        return self.uploads[index]

    @property
    def active(self) -> Upload | None:
        return self.uploads[self.current] if self.uploads else None

    def items(self) -> list[dict[str, Any]]:
        """For the page's select: one item per upload, newest last."""
        return [{"title": upload.title, "value": index} for index, upload in enumerate(self.uploads)]
