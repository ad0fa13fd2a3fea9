// Live figures and fetch-powered buttons for examples/admin_panel.py.
//
// Served as /static/admin.js; the page's Content-Security-Policy allows
// scripts from the panel itself only, so everything lives here, not inline.
// Without JavaScript the page still works: the figures are as of page load
// and the buttons submit ordinary forms (POST, then a 303 back to /).
"use strict";

(() => {
    const POLL_MS = 1000;
    const panel = document.querySelector(".panel");
    const live = document.getElementById("live");
    const pauseButton = document.getElementById("pause");
    const resumeButton = document.getElementById("resume");
    const updated = document.getElementById("updated");

    // The same formats as the page rendered by the server.
    const formats = {
        state: (s) => s.state,
        processed: (s) => String(s.processed),
        rate: (s) => s.rate.toFixed(1),
        latency: (s) => (s.last_latency_ms === null ? "n/a" : `${s.last_latency_ms.toFixed(1)} ms`),
        uptime: (s) => formatUptime(s.uptime),
        errors: (s) => String(s.errors),
        "last-error": (s) => (s.last_error === null ? "none" : s.last_error),
    };

    function formatUptime(seconds) {
        const total = Math.floor(seconds);
        const h = Math.floor(total / 3600);
        const m = Math.floor((total % 3600) / 60);
        const s = total % 60;
        const pad = (n) => String(n).padStart(2, "0");
        return `${h}:${pad(m)}:${pad(s)}`;
    }

    function render(stats) {
        for (const [id, format] of Object.entries(formats)) {
            const element = document.getElementById(id);
            if (element !== null) {
                element.textContent = format(stats); // never innerHTML
            }
        }
        panel.dataset.state = stats.state;
        pauseButton.disabled = stats.paused;
        resumeButton.disabled = !stats.paused;
        const now = new Date().toLocaleTimeString();
        updated.textContent = `Live figures, updated every second (last at ${now}).`;
    }

    function setOnline(online) {
        live.hidden = false;
        live.dataset.online = String(online);
        live.textContent = online ? "live" : "disconnected";
    }

    async function fetchJson(url, options) {
        const response = await fetch(url, {
            credentials: "same-origin",
            cache: "no-store",
            ...options,
            headers: { Accept: "application/json", ...(options && options.headers) },
        });
        if (!response.ok) {
            throw new Error(`${url}: HTTP ${response.status}`);
        }
        return response.json();
    }

    let polling = false;

    async function poll() {
        if (polling) {
            return; // the previous request is still out: skip a beat
        }
        polling = true;
        try {
            render(await fetchJson("/api/stats"));
            setOnline(true);
        } catch (_error) {
            setOnline(false); // the program stopped, or the token cookie expired
        } finally {
            polling = false;
        }
    }

    for (const form of document.querySelectorAll("form[data-action]")) {
        form.addEventListener("submit", async (event) => {
            event.preventDefault();
            try {
                // The form's own fields, CSRF token included, urlencoded.
                const body = new URLSearchParams(new FormData(form));
                render(await fetchJson(form.action, { method: "POST", body }));
                setOnline(true);
            } catch (_error) {
                form.submit(); // fall back to the plain form (no submit event)
            }
        });
    }

    document.documentElement.dataset.js = "ready";
    poll();
    window.setInterval(poll, POLL_MS);
})();
