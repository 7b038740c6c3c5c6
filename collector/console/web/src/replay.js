// replay.js: plays an SSH recording with asciinema-player (its own
// controls: play/pause and seek; keys: space, arrows). Speed and idle
// skipping are player options, so changing them re-creates the player at
// the same position. The player's terminal element also gets the class
// ap-terminal (its name before asciinema-player 3.10), which the console's
// contract and its browser test name.
(function () {
  "use strict";

  var el = document.querySelector("[data-testid=replay-player]");
  if (!el || !el.dataset.cast || !window.AsciinemaPlayer) {
    return;
  }
  var speed = document.getElementById("replay-speed");
  var idle = document.getElementById("replay-idle");
  var player = null;

  function create(at, play) {
    var opts = {
      speed: parseFloat(speed.value) || 1,
      fit: "width",
      preload: true,
      autoPlay: play,
      startAt: at || 0,
    };
    if (idle.checked) {
      opts.idleTimeLimit = 2;
    }
    if (player) {
      player.dispose();
    }
    player = window.AsciinemaPlayer.create(el.dataset.cast, el, opts);
  }

  function recreate() {
    var at = 0;
    if (player) {
      at = player.getCurrentTime() || 0;
    }
    create(at, at > 0);
  }

  new MutationObserver(function () {
    var term = el.querySelector(".ap-term:not(.ap-terminal)");
    if (term) {
      term.classList.add("ap-terminal");
    }
  }).observe(el, { childList: true, subtree: true });

  speed.addEventListener("change", recreate);
  idle.addEventListener("change", recreate);
  create(0, false);
})();
