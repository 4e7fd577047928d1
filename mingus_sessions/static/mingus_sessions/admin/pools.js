/* The "Connection pools" pages refresh themselves while they are shown.
 *
 * Every few seconds (data-mingus-refresh-seconds on #content-main) the page fetches its own
 * live parts (data-mingus-live-url: the page with ?live=1) and puts each element marked
 * data-mingus-live in place of the one with the same id, when it changed. What is not
 * marked (the action forms, the refresh switch) stays as it is; so do the scroll position,
 * the theme, and a part that holds the focus, a text selection or the pointer on a chart
 * point (it is brought up to date at the next refresh after that). One timer at most is
 * pending and one fetch at most in flight; both stop while the tab is hidden
 * (document.visibilityState) or the switch is off, and start again when it is shown.
 */
'use strict';
{
    const root = document.querySelector('[data-mingus-live-url]');
    const toggle = document.getElementById('mingus-refresh-toggle');
    const status = document.getElementById('mingus-refresh-status');
    let timer = null;
    let inFlight = null;

    function say(text) {
        status.textContent = text;
    }

    function running() {
        return document.visibilityState === 'visible' && toggle.checked;
    }

    function halt() {
        if (timer !== null) {
            clearTimeout(timer);
            timer = null;
        }
        if (inFlight !== null) {
            inFlight.abort();
            inFlight = null;
        }
    }

    function schedule(delay) {
        if (timer !== null) {
            clearTimeout(timer);
        }
        timer = setTimeout(refresh, delay);
    }

    function period() {
        const seconds = Number(root.dataset.mingusRefreshSeconds);
        return (Number.isFinite(seconds) && seconds > 0 ? seconds : 5) * 1000;
    }

    function busy(part) {
        // The reader is using this part: replacing it would drop the focus, the selection
        // or the tooltip under the pointer.
        if (part.contains(document.activeElement) && document.activeElement !== document.body) {
            return true;
        }
        const selection = window.getSelection();
        if (selection && !selection.isCollapsed && selection.containsNode(part, true)) {
            return true;
        }
        return part.querySelector('.mingus-point:hover') !== null;
    }

    function swap(fresh) {
        for (const part of fresh.querySelectorAll('[data-mingus-live][id]')) {
            const current = document.getElementById(part.id);
            if (current === null || current.innerHTML === part.innerHTML || busy(current)) {
                continue;
            }
            current.replaceWith(document.importNode(part, true));
        }
    }

    async function refresh() {
        timer = null;
        if (!running()) {
            return;
        }
        const controller = new AbortController();
        inFlight = controller;
        try {
            const response = await fetch(root.dataset.mingusLiveUrl, {
                credentials: 'same-origin',
                cache: 'no-store',
                redirect: 'manual',
                signal: controller.signal,
                headers: {Accept: 'text/html'},
            });
            if (response.type === 'opaqueredirect') {
                // The admin sends a signed-out user to its login page.
                say('Not refreshing: you are signed out. Reload the page to sign in.');
                return;
            }
            const text = await response.text();
            const fresh = new DOMParser().parseFromString(text, 'text/html');
            if (fresh.getElementById('mingus-live-fragment') === null) {
                throw new Error(`the server answered ${response.status}`);
            }
            swap(fresh);
            say(`Updated at ${new Date().toLocaleTimeString()}.`);
        } catch (error) {
            if (error.name === 'AbortError') {
                return;  // halted: whoever halted it starts it again
            }
            say(`Could not refresh (${error.message}); trying again.`);
        } finally {
            if (inFlight === controller) {
                inFlight = null;
            }
        }
        if (running()) {
            schedule(period());
        }
    }

    function restart() {
        halt();
        if (running()) {
            schedule(0);
        } else {
            say(toggle.checked ? 'Paused while the tab is hidden.' : 'Paused.');
        }
    }

    if (root !== null && toggle !== null && status !== null) {
        document.getElementById('mingus-refresh').hidden = false;
        document.addEventListener('visibilitychange', restart);
        toggle.addEventListener('change', restart);
        if (running()) {
            schedule(period());
        }
    }
}
