from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import soundfile


def ttsd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ttsd.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_say_writes_a_file_in_the_extension_format(tmp_path: Path) -> None:
    out = tmp_path / "hello.ogg"
    result = ttsd("say", "Hello from the command line.", "-v", "en-joe", "-o", str(out))
    assert result.returncode == 0, result.stderr
    samples, rate = soundfile.read(io.BytesIO(out.read_bytes()))
    assert rate == 22050 and len(samples) / rate > 1


def test_say_cantonese(tmp_path: Path) -> None:
    out = tmp_path / "yue.wav"
    assert ttsd("say", "早晨，你好。", "-l", "yue", "-o", str(out)).returncode == 0
    assert soundfile.info(str(out)).duration > 0.5


def test_say_ssml_breaks_are_silence_between_sentences(tmp_path: Path) -> None:
    plain, ssml = tmp_path / "plain.wav", tmp_path / "ssml.wav"
    text = "Hold on. I will check."
    assert ttsd("say", text, "-v", "en-heart", "-o", str(plain)).returncode == 0
    document = '<speak>Hold on.<break time="1500ms"/>I will check.</speak>'
    assert ttsd("say", document, "-v", "en-heart", "--seed", "1", "-o", str(ssml)).returncode == 0
    gap = soundfile.info(str(ssml)).duration - soundfile.info(str(plain)).duration
    assert 1.2 < gap < 1.8, gap
    # Asked for as SSML, plain text is refused; asked for as text, the markup is read as words.
    refused = ttsd("say", text, "--text-type", "ssml", "-o", str(tmp_path / "x.wav"))
    assert refused.returncode == 2 and "SSML" in refused.stderr


def test_bad_input_exits_2(tmp_path: Path) -> None:
    result = ttsd("say", "hi", "-v", "nobody", "-o", str(tmp_path / "x.wav"))
    assert result.returncode == 2 and "unknown voice" in result.stderr
    assert ttsd("say", "   ", "-o", str(tmp_path / "x.wav")).returncode == 2
    assert not (tmp_path / "x.wav").exists()


def test_voices_lists_the_catalogue() -> None:
    result = ttsd("voices")
    assert result.returncode == 0
    assert "en-joe" in result.stdout and "yue-female" in result.stdout and "alloy" in result.stdout
