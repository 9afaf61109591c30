"""Keyboard and labelling checks over a rendered page, with Playwright."""

NAMES_AND_TABINDEX = """() => {
  const controls = [...document.querySelectorAll('input, select, textarea, button')]
    .filter(e => e.type !== 'hidden');
  const named = e => {
    if ((e.getAttribute('aria-label') || '').trim()) return true;
    if (e.id && [...document.querySelectorAll('label')].some(l => l.htmlFor === e.id && l.textContent.trim()))
      return true;
    const wrapping = e.closest('label');
    if (wrapping && wrapping.textContent.trim()) return true;
    return e.tagName === 'BUTTON' && e.textContent.trim().length > 0;
  };
  return {
    count: controls.length,
    unnamed: controls.filter(e => !named(e)).map(e => e.outerHTML.slice(0, 160)),
    positive: [...document.querySelectorAll('[tabindex]')]
      .filter(e => parseInt(e.getAttribute('tabindex'), 10) > 0).map(e => e.outerHTML.slice(0, 160)),
  };
}"""

# Mark every tab stop in document order: links, controls (one stop per radio group: the checked radio, else the
# first), leaving out hidden, disabled and tabindex=-1 elements.
MARK_TAB_STOPS = """() => {
  const all = [...document.querySelectorAll('a[href], input, select, textarea, button')];
  const seenGroups = new Set();
  const stops = [];
  for (const e of all) {
    if (e.type === 'hidden' || e.disabled || e.getAttribute('tabindex') === '-1') continue;
    if (e.type === 'radio') {
      if (seenGroups.has(e.name)) continue;
      seenGroups.add(e.name);
      const group = [...document.querySelectorAll('input[type=radio]')].filter(r => r.name === e.name);
      const target = group.find(r => r.checked) || group[0];
      stops.push(target);
      continue;
    }
    stops.push(e);
  }
  stops.forEach((e, i) => e.setAttribute('data-tab-stop', String(i)));
  return stops.length;
}"""


# Start keyboard navigation at the top of the page, whatever had focus (a probe before everything, not a stop).
START_AT_THE_TOP = """() => {
  let probe = document.getElementById('tab-probe-start');
  if (!probe) {
    probe = document.createElement('span');
    probe.id = 'tab-probe-start';
    probe.tabIndex = -1;
    document.body.prepend(probe);
  }
  probe.focus();
}"""


def check_page_accessibility(page) -> int:  # noqa: ANN001 - a Playwright Page
    """Every control has a name, no positive tabindex, and Tab alone reaches every stop in document order."""
    found = page.evaluate(NAMES_AND_TABINDEX)
    assert not found["unnamed"], f"controls without an accessible name: {found['unnamed']}"
    assert not found["positive"], f"positive tabindex: {found['positive']}"
    expected = page.evaluate(MARK_TAB_STOPS)
    assert expected > 0, "nothing on the page can be reached by keyboard"
    page.evaluate(START_AT_THE_TOP)
    reached = []
    for _ in range(expected):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement && document.activeElement.getAttribute("
                                     "'data-tab-stop')"))
    assert reached == [str(i) for i in range(expected)], f"Tab order {reached} (expected 0..{expected - 1})"
    return found["count"]
