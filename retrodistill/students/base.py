"""The student plug-in registry."""

from __future__ import annotations

from retrodistill.registry import Registry

STUDENTS: Registry = Registry("student")
