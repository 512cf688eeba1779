"""Text of the evaluation report."""
import re


def doc_items(doc):
    """A docstring as Markdown lines: paragraphs joined into lines, and an
    item list where lines like "  name   text" start items (an item goes on
    until a blank line)."""
    out, para, in_item = [], [], False
    for ln in doc.splitlines() + [""]:
        m = re.match(r"  (\S.*?)\s{2,}(\S.*)", ln)
        if m:
            if para:
                out += [" ".join(para), ""]
                para = []
            out.append(f"- **{m.group(1)}**: {m.group(2)}")
            in_item = True
        elif not ln.strip():
            if para:
                out += [" ".join(para), ""]
                para = []
            elif in_item:
                out.append("")
            in_item = False
        elif in_item:
            out[-1] += " " + ln.strip()
        else:
            para.append(ln.strip())
    return out
