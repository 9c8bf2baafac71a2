"""Noto Sans CJK, cut down to the characters of one document and given TrueType outlines.

Debian's Noto Sans CJK is a collection of CID-keyed CFF fonts. fpdf2 embeds such a font with an
encoding CMap of its own, which the PDF format allows but some readers do not implement (pypdf
decodes the text as garbage), so the copy would print correctly and still not be readable as
text. A TrueType font is embedded with the standard Identity-H encoding instead, and a subset of
a few hundred glyphs converts in well under a second (fontTools' cu2qu turns the cubic curves into
quadratic ones, within one font unit).
"""

from __future__ import annotations

import io
from pathlib import Path

from fontTools import subset
from fontTools.pens.cu2quPen import Cu2QuPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTFont, newTable

MAX_ERROR = 1.0  # font units (of 1000 per em): invisible at any print size


def truetype_subset(collection: Path, face: int, text: str) -> bytes:
    """A TrueType font with the glyphs `text` needs from face `face` of a CFF collection."""
    font = TTFont(str(collection), fontNumber=face, lazy=True)
    options = subset.Options()
    options.desubroutinize = True  # charstrings drawn one by one below
    options.layout_features = []  # fpdf2 does no shaping here; Chinese needs none
    options.name_IDs = ["*"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes={ord(char) for char in text})
    subsetter.subset(font)
    _cff_to_glyf(font)
    output = io.BytesIO()
    font.save(output)
    return output.getvalue()


def _cff_to_glyf(font: TTFont) -> None:
    order = font.getGlyphOrder()
    glyph_set = font.getGlyphSet()
    glyphs = {}
    for name in order:
        pen = TTGlyphPen(glyph_set)
        glyph_set[name].draw(Cu2QuPen(pen, MAX_ERROR, reverse_direction=True))
        glyphs[name] = pen.glyph()
    font["loca"] = newTable("loca")
    glyf = font["glyf"] = newTable("glyf")
    glyf.glyphOrder = order
    glyf.glyphs = glyphs
    del font["CFF "]
    if "VORG" in font:  # CFF-only table
        del font["VORG"]
    font["head"].glyphDataFormat = 0
    maxp = font["maxp"] = newTable("maxp")  # version 1.0 (TrueType); counts recomputed on save
    maxp.tableVersion = 0x00010000
    maxp.maxZones = 1
    for field in ("maxPoints", "maxContours", "maxCompositePoints", "maxCompositeContours",
                  "maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs",
                  "maxStackElements", "maxSizeOfInstructions", "maxComponentElements",
                  "maxComponentDepth"):
        setattr(maxp, field, 0)
    post = font["post"]  # format 2 keeps the glyph names that CFF held
    post.formatType = 2.0
    post.extraNames = []
    post.mapping = {}
    post.glyphOrder = order
    font.sfntVersion = "\x00\x01\x00\x00"
