"""affcache's audio windows against RAS's released validation windows.

    python bench/ras_windows.py /path/to/RAS/repo [--split val] [--diff-limit 40]

PATH is a fetched copy of RAS's repository (a bare git directory or a checkout). For every track of the
split it takes RAS's label file, its mouth CSV (`data/openmouth/<track>.csv`, frames counted from 1) and
the video's fps from `data/videos_fps.csv`; the frame count of each video (RAS read it with OpenCV from
videos that are not public) is the one its released windows imply: round(last window end x fps). It runs
the mouth CSVs written as a `mouth` store as `import-features --format csv` reads them (frame k counted from 1
is frame k - 1) and lists the windows as `pipeline.py windows --level audio_window` does
(`train.data.window_list.list_windows`, stand-in videos of RAS's rates and frame counts), and compares with RAS's
`data/labels_segmented_s2s_wav/<split>_audio_segment.csv`: window grid (start/end frame and time), open
seconds, coverage, RAS's `use_for_audio`, the training flag (use_for_audio and >= 2 valid blocks, as
RAS's audio dataset filters) and the block and overall targets. A second column reads the mouth CSVs as
RAS's code does (frame k as frame k). Prints an agreement table and every differing window with its
cause. Nothing is kept (the store lives in a temporary folder). A benchmark, not a test: CI has no copy of RAS's code.
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache.manifest import Labels, Track  # noqa: E402
from cache.media import VideoInfo, frame_times  # noqa: E402
from cache.store import FeatureMeta, FeatureStore, store_path  # noqa: E402
from cache.audio_windows import AudioWindowRule, AudioWindows, audio_windows  # noqa: E402
from train.data.window_list import list_windows  # noqa: E402

BASE = "src_audio_and_fusion/data"
SPLIT_DIRS = {"train": "Train_Set", "val": "Validation_Set"}


class Repo:
    """Reads text files from a bare git directory or a checkout."""

    def __init__(self, path: Path):
        self.path = path
        self.bare = not (path / BASE).exists()

    def rows(self, rel: str) -> list[dict[str, str]]:
        if self.bare:
            text = subprocess.run(["git", f"--git-dir={self.path}", "show", f"HEAD:{rel}"], check=True,
                                  capture_output=True, text=True).stdout
        else:
            text = (self.path / rel).read_text()
        return list(csv.DictReader(io.StringIO(text)))


def mouth_frames(rows: list[dict[str, str]], n_frames: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Per 0-based frame (open, detected) from a RAS mouth CSV; frame number k is frame k - shift."""
    flag, seen = np.zeros(n_frames, bool), np.zeros(n_frames, bool)
    for r in rows:
        k = int(r["frame"]) - shift
        if 0 <= k < n_frames:
            flag[k], seen[k] = int(float(r["mouth_open"])) != 0, True
    return flag, seen


def container_rate(fps: float) -> float:
    """videos_fps.csv rounds rates to 3 decimals; an NTSC rate (29.97, 23.976, 59.94) is 1000·n/1001
    in the container (and in RAS's OpenCV reading: its windows' end times are n_frames · 1001 / 30000)."""
    for n in (24, 30, 60):
        if abs(fps - n * 1000 / 1001) < 5e-4:
            return n * 1000 / 1001
    return fps


def _nan5(x: np.ndarray) -> np.ndarray:
    return np.where(x == -5, np.nan, x)


def _close(a, b) -> bool:
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), atol=1e-6, equal_nan=True))


def via_store(cache: Path, track: str, mouth: list[dict[str, str]], n_frames: int, fps: float, labels: np.ndarray,
              valid: np.ndarray, rule: AudioWindowRule) -> AudioWindows:
    """The mouth CSV written as a `mouth` store the way `import-features --format csv` reads it (frame k,
    counted from 1, is row k - 1; frames missing from the CSV are invalid rows; columns named as in the
    CSV), then the windows as `pipeline.py windows --level audio_window` lists them, for a stand-in video
    of RAS's rate and frame count."""
    values = np.zeros((n_frames, 2), np.float32)
    present = np.zeros(n_frames, bool)
    for r in mouth:
        k = int(r["frame"]) - 1
        if 0 <= k < n_frames:
            values[k] = (float(r["surface_area_mouth"]), float(r["mouth_open"]))
            present[k] = True
    store = FeatureStore.create_or_open(store_path(cache, "mouth"), FeatureMeta(name="mouth", kind="frame"))
    store.write(track, values, frame_times(n_frames, fps), present, attrs={"columns": ["surface_area_mouth", "mouth_open"]})
    video = Path(f"{track}.mp4")
    info = VideoInfo(video, fps, n_frames, n_frames / fps, 0, 0, True)
    t = Track(track, "val", video, labels=Labels(labels.astype(np.float32), valid), n_frames=len(labels))
    rows = list_windows([t], "audio_window", 200, 100, cache, rule, video_info=lambda _: info)
    col = lambda key: np.array([float(r[key]) for r in rows])  # noqa: E731
    blocks = np.stack([np.stack([col(f"valence_b{i}"), col(f"arousal_b{i}")], 1) for i in range(rule.blocks)], 1)
    return AudioWindows(np.stack([col("start_time"), col("end_time")], 1),
                        np.stack([col("start_frame"), col("end_frame")], 1).astype(int), col("open_s"), col("coverage"),
                        np.array([bool(r["reliable"]) for r in rows]), blocks, ~np.isnan(blocks).any(axis=2),
                        np.stack([col("valence"), col("arousal")], 1), np.array([bool(r["used_for_training"]) for r in rows]))


def compare(repo: Repo, split: str, shift: int, rule: AudioWindowRule,
            cache: Path | None = None) -> tuple[list[dict], dict[str, str]]:
    """Per window of RAS's CSV: RAS's and our values (through a mouth store in `cache`, else from the
    CSV's frames read with `shift`); and the agreement table."""
    ras = repo.rows(f"{BASE}/labels_segmented_s2s_wav/{split}_audio_segment.csv")
    fps_map = {r["video_name"]: float(r["fps"]) for r in repo.rows(f"{BASE}/videos_fps.csv")}
    by_track: dict[str, list[dict[str, str]]] = {}
    for r in ras:
        by_track.setdefault(r["video_name"].split("___")[0], []).append(r)
    out, n_ours = [], 0
    for track, theirs in by_track.items():
        fps = container_rate(fps_map[theirs[0]["full_video_name"]])
        n_frames = int(round(max(float(t["end_time"]) for t in theirs) * fps))
        lab = repo.rows(f"{BASE}/labels/VA_Estimation_Challenge/{SPLIT_DIRS[split]}/{track}.txt")
        labels = np.array([[float(r["valence"]), float(r["arousal"])] for r in lab])
        valid = (labels != -5).all(axis=1)
        mouth = repo.rows(f"{BASE}/openmouth/{track}.csv")
        if cache is not None:  # affcache's path: mouth store + `pipeline.py windows`' listing
            ours = via_store(cache, track, mouth, n_frames, fps, labels, valid, rule)
        else:
            flag, seen = mouth_frames(mouth, n_frames, shift)
            ours = audio_windows(n_frames, fps, rule, flag, seen, labels, valid)
        n_ours += len(ours)
        for w, t in enumerate(theirs):
            blocks = _nan5(np.array([[float(t[f"valence_s{i}"]), float(t[f"arousal_s{i}"])] for i in range(rule.blocks)]))
            r = {"track": track, "w": w, "ras_grid": (int(t["start_frame"]), int(t["end_frame"]),
                                                      float(t["start_time"]), float(t["end_time"])),
                 "ras_open": float(t["open_sec"]), "ras_cov": float(t["coverage_ratio"]),
                 "ras_use": t["use_for_audio"] == "True", "ras_blocks": blocks,
                 "ras_target": _nan5(np.array([float(t["valence"]), float(t["arousal"])]))}
            r["ras_train"] = r["ras_use"] and int((~np.isnan(blocks).any(axis=1)).sum()) >= rule.min_valid_blocks
            if w < len(ours):
                r.update(grid=(int(ours.frames[w, 0]), int(ours.frames[w, 1]), float(ours.times[w, 0]), float(ours.times[w, 1])),
                         open=float(ours.open_s[w]), cov=float(ours.coverage[w]), use=bool(ours.reliable[w]),
                         train=bool(ours.train[w]), blocks=ours.block_targets[w], target=ours.target[w])
                r["grid_ok"] = r["grid"][:2] == r["ras_grid"][:2] and _close(r["grid"][2:], r["ras_grid"][2:])
            else:
                r["grid_ok"] = False
            out.append(r)
    both = [r for r in out if "grid" in r]
    n = len(ras)
    stats = {
        "windows (RAS / ours)": f"{n} / {n_ours}",
        "grid identical": f"{sum(r['grid_ok'] for r in out)} / {n}",
        "open seconds equal": _share([abs(r["open"] - r["ras_open"]) < 1e-6 for r in both]),
        "coverage equal": _share([abs(r["cov"] - r["ras_cov"]) < 1e-6 for r in both]),
        "reliable = RAS use_for_audio": _share([r["use"] == r["ras_use"] for r in both]),
        "training flag agrees": _share([r["train"] == r["ras_train"] for r in both]),
        "training windows (RAS / ours)": f"{sum(r['ras_train'] for r in both)} / {sum(r['train'] for r in both)}",
        "block targets equal": f"{sum(_close(a, b) for r in both for a, b in zip(r['blocks'], r['ras_blocks']))}"
                               f" / {rule.blocks * len(both)}",
        "overall targets equal": f"{sum(_close(r['target'], r['ras_target']) for r in both)} / {len(both)}",
    }
    return out, stats


def _share(ok: list[bool]) -> str:
    return f"{sum(ok)} / {len(ok)} ({100 * sum(ok) / max(len(ok), 1):.2f} %)"


def cause(r: dict) -> str:
    parts = [name for name, a, b in (("open", r["open"], r["ras_open"]), ("coverage", r["cov"], r["ras_cov"]))
             if abs(a - b) > 1e-6]
    if not parts:
        return "same open seconds and coverage: threshold edge"
    return (f"{' and '.join(parts)} differ (open {r['open']:.3f} vs RAS {r['ras_open']:.3f} s, coverage "
            f"{r['cov']:.3f} vs {r['ras_cov']:.3f}): RAS reads the mouth CSV's 1-based frame numbers as 0-based")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", type=Path, help="RAS's repository: a bare git directory or a checkout")
    ap.add_argument("--split", default="val", choices=sorted(SPLIT_DIRS))
    ap.add_argument("--diff-limit", type=int, default=60, help="list at most this many differing windows")
    args = ap.parse_args(argv)
    repo, rule = Repo(args.repo), AudioWindowRule()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        df, stats = compare(repo, args.split, shift=1, rule=rule, cache=Path(tmp))
    _, ras_reading = compare(repo, args.split, shift=0, rule=rule)
    print(f"RAS's released {args.split} audio windows vs affcache ({time.perf_counter() - t0:.1f} s)\n")
    print(f"| {'measure':32s} | {'affcache (mouth frame k = frame k-1)':38s} | {'RAS reading (frame k = k)':28s} |")
    print(f"|{'-' * 34}|{'-' * 40}|{'-' * 30}|")
    for key in stats:
        print(f"| {key:32s} | {stats[key]:38s} | {ras_reading[key]:28s} |")
    bad_grid = [r for r in df if not r["grid_ok"]]
    bad_flag = [r for r in df if r["grid_ok"] and r["train"] != r["ras_train"]]
    print(f"\nwindows whose grid differs: {len(bad_grid)}")
    for r in bad_grid[: args.diff_limit]:
        print(f"  {r['track']} #{r['w']}: ours {r.get('grid')} RAS {r['ras_grid']}")
    print(f"windows whose training flag differs: {len(bad_flag)}")
    for r in bad_flag[: args.diff_limit]:
        print(f"  {r['track']} #{r['w']} frames {r['grid'][0]}-{r['grid'][1]}: ours {r['train']} RAS {r['ras_train']}: {cause(r)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
