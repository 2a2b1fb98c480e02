"""The bundled suite with each instance pointing at its locally built image."""

from __future__ import annotations

from records import TaskInstance
from tasks.bundled.materialize import materialize
from tasks.bundled.suite import BundledSuite
from tasks.images import ensure_images, repo_image


class BundledImageSuite(BundledSuite):
    """`BundledSuite` whose instances name their image (`evolve-task-<repo>:<commit>`)."""

    def instances(self, split: str | None = None) -> list[TaskInstance]:
        items = super().instances(split)
        for inst in items:
            inst.image = inst.image or repo_image(inst.repo.split("/")[-1], inst.base_commit)
        return items

    def build_images(self, force: bool = False) -> list[str]:
        """Build every instance's image from the base image (skips those that exist)."""
        return ensure_images(self.instances(), materialize, force=force)
