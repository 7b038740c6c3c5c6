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
  var playing = false;

  // create makes a player at time at (seconds), showing that frame, and
  // playing if play.
  function create(at, play) {
    var opts = {
      speed: parseFloat(speed.value) || 1,
      fit: "width",
      preload: true,
      autoPlay: play,
    };
    if (at > 0) {
      opts.startAt = at;
      opts.poster = "npt:" + at;
    }
    if (idle.checked) {
      opts.idleTimeLimit = 2;
    }
    if (player) {
      player.dispose();
    }
    playing = play;
    player = window.AsciinemaPlayer.create(el.dataset.cast, el, opts);
    player.addEventListener("play", function () { playing = true; });
    player.addEventListener("playing", function () { playing = true; });
    player.addEventListener("pause", function () { playing = false; });
    player.addEventListener("ended", function () { playing = false; });
  }

  function recreate() {
    var play = playing;
    // getCurrentTime answers a promise (asciinema-player 3.x).
    Promise.resolve(player ? player.getCurrentTime() : 0).then(function (at) {
      create(typeof at === "number" && isFinite(at) ? at : 0, play);
    });
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
