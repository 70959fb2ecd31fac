"""Console log parsing: kernel splats, test windows."""

from .splat import Splat, scan_lines, scan_text
from .windows import BEGIN, END, TestWindow, find_windows

__all__ = ["BEGIN", "END", "Splat", "TestWindow", "find_windows", "scan_lines", "scan_text"]
