"""benchmarks.chapter_plumbing counts code lines of code cells only, and plumbing by its pattern."""
from benchmarks.chapter_plumbing import code_lines, plumbing_lines


def test_code_and_plumbing_lines_of_a_chapter(tmp_path):
    chapter = tmp_path / "01_x.md"
    chapter.write_text("\n".join([
        "# A chapter", "text with json.loads( in prose is not code", "```{code-cell} ipython3", ":tags: [hide-input]",
        "", "# a comment", "x = 1", 'r = json.loads(path.read_text())', 'display(t.style.format("{:.2f}"))', "```",
        "```python", "not a code cell = 1", "```"]))
    assert code_lines(chapter) == [(7, "x = 1"), (8, 'r = json.loads(path.read_text())'),
                                   (9, 'display(t.style.format("{:.2f}"))')]
    assert [n for n, _ in plumbing_lines(chapter)] == [8, 9]
