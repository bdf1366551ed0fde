"""Mask files the way datasets write them."""

from __future__ import annotations


def voc_palette() -> list[int]:
    """PASCAL VOC's (and DAVIS') colour map: index 1 is dark red (128, 0, 0), 255 is void (224, 224, 192)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette
