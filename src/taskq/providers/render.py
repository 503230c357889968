"""Normalized result pieces shared by adapters: numbered sources, markdown with citations, text blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Sources:
    """Sources in first-seen order, deduplicated by URL, numbered from 1."""

    items: list[dict[str, Any]] = field(default_factory=list)
    _by_url: dict[str, int] = field(default_factory=dict)

    def add(self, url: str, label: str | None = None, description: str | None = None, **extra: Any) -> int:
        """Add a source (or enrich the one already there); return its 1-based position."""
        known = self._by_url.get(url)
        if known is not None:
            item = self.items[known - 1]
            if label and item["label"] == domain(url):
                item["label"] = label
            if description and not item["description"]:
                item["description"] = description
            return known
        position = len(self.items) + 1
        self._by_url[url] = position
        self.items.append(
            {
                "position": position,
                "url": url,
                "label": label or domain(url),
                "description": description or "",
            }
            | extra
        )
        return position

    def __len__(self) -> int:
        return len(self.items)


def domain(url: str) -> str:
    host = urlsplit(url).hostname or url
    return host.removeprefix("www.")


def link(label: str, url: str) -> str:
    """A markdown inline link, with the characters that would end it early escaped."""
    label = label.replace("[", r"\[").replace("]", r"\]")
    return f"[{label}]({url.replace(' ', '%20').replace('(', '%28').replace(')', '%29')})"


def source_list(sources: Sources) -> str:
    return "\n".join(f"{s['position']}. {link(s['label'], s['url'])}" for s in sources.items)


def with_citations(text: str, marks: list[tuple[int, int]], sources: Sources) -> str:
    """Markdown: a [n](url) link at each (character offset, source position), then the source list."""
    by_position = {s["position"]: s["url"] for s in sources.items}
    out = text
    for offset, position in sorted(set(marks), reverse=True):
        if position not in by_position:
            continue
        at = max(0, min(offset, len(out)))
        out = out[:at] + link(str(position), by_position[position]) + out[at:]
    return f"{out}\n\n{source_list(sources)}" if len(sources) else out


def char_offset(encoded: bytes, byte_offset: int) -> int:
    """Character index of a UTF-8 byte offset; an offset inside a character snaps back to its start."""
    return len(encoded[: max(0, byte_offset)].decode("utf-8", errors="ignore"))


def text_blocks(blocks: Any, refs: dict[Any, int], sources: Sources) -> tuple[str, str]:
    """(plain text, markdown) from SerpApi text_blocks; reference_indexes become [n](url) links."""
    plain: list[str] = []
    marked: list[str] = []
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        cites = _cites(block, refs, sources)
        if kind == "list" or isinstance(block.get("list"), list):
            lead = str(block.get("snippet") or "")
            if lead:
                plain.append(lead)
                marked.append(lead + cites)
            items = _list_items(block.get("list"), refs, sources, depth=0)
            plain.append("\n".join(p for p, _ in items))
            marked.append("\n".join(m for _, m in items))
        elif kind in ("code_block", "code"):
            code = str(block.get("code") or block.get("snippet") or "")
            plain.append(code)
            marked.append(f"```{block.get('language') or ''}\n{code}\n```")
        elif kind == "table" and isinstance(block.get("table"), list):
            rows = [[str(c) for c in row] for row in block["table"] if isinstance(row, list)]
            plain.append("\n".join(" | ".join(row) for row in rows))
            if rows:
                head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0])
                marked.append("\n".join([head, *("| " + " | ".join(r) + " |" for r in rows[1:])]))
        elif block.get("snippet"):
            snippet = str(block["snippet"])
            plain.append(snippet)
            marked.append(("## " if kind == "heading" else "") + snippet + cites)
    return "\n\n".join(p for p in plain if p), "\n\n".join(m for m in marked if m)


def _list_items(items: Any, refs: dict[Any, int], sources: Sources, depth: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        indent = "  " * depth
        title = str(item.get("title") or "")
        snippet = str(item.get("snippet") or "")
        words = f"{title}: {snippet}" if title and snippet else title or snippet
        if words:
            out.append((f"{indent}- {words}", f"{indent}- {words}{_cites(item, refs, sources)}"))
        out.extend(_list_items(item.get("list"), refs, sources, depth + 1))
    return out


def _cites(block: dict[str, Any], refs: dict[Any, int], sources: Sources) -> str:
    urls = {s["position"]: s["url"] for s in sources.items}
    positions = [refs[i] for i in block.get("reference_indexes") or [] if i in refs]
    return "".join(" " + link(str(p), urls[p]) for p in dict.fromkeys(positions))
