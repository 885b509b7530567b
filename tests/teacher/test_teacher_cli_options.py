"""`mathdistill teach` options: out-of-range values and an --out that is a file are refused before any
work (exit 2, the option named, no traceback, nothing written); every option has help text."""

from __future__ import annotations

import pytest

from test_teacher_failures import run_teach


@pytest.mark.parametrize("option, value", [
    ("--limit", "0"), ("--limit", "-5"), ("--samples", "0"), ("--concurrency", "0"), ("--max-tokens", "0"),
    ("--max-retries", "-1"), ("--timeout", "0"), ("--timeout", "-2"), ("--rpm", "0"), ("--tpm", "-5"),
    ("--price-prompt", "-1"), ("--price-completion", "-0.5"),
])
def test_out_of_range_values_are_refused_before_any_work(option, value, fake_server, data_dir, tmp_path, capsys, monkeypatch):
    server = fake_server()
    out = tmp_path / "out"
    args = ["teach", "--dataset", "gsm8k", "--limit", "2", "--thought", "cot", "--teacher-url", server.url,
            "--teacher-model", "m", "--out", str(out), "--data-dir", str(data_dir), "--no-progress", option, value]
    code, stdout, stderr = run_teach(args, capsys, monkeypatch)
    assert code == 2 and option in stderr and "Traceback" not in stderr, stderr
    assert server.count() == 0 and not out.exists()


def test_out_that_is_a_file_is_refused(fake_server, data_dir, tmp_path, capsys, monkeypatch):
    server = fake_server()
    out = tmp_path / "out.json"
    out.write_text("{}")
    args = ["teach", "--dataset", "gsm8k", "--limit", "2", "--thought", "cot", "--teacher-url", server.url,
            "--teacher-model", "m", "--out", str(out), "--data-dir", str(data_dir), "--no-progress"]
    code, stdout, stderr = run_teach(args, capsys, monkeypatch)
    assert code == 2 and "--out" in stderr and str(out) in stderr and "Traceback" not in stderr, stderr
    assert server.count() == 0 and out.read_text() == "{}" and sorted(tmp_path.iterdir()) == [out]


def test_every_option_has_help_and_exit_codes_are_documented():
    import typer

    from mathdistill.teacher.cli import teach_command

    app = typer.Typer(add_completion=False)
    app.command()(teach_command)
    command = typer.main.get_command(app)
    missing = [p.opts[0] for p in command.params if not getattr(p, "help", None)]
    assert missing == []
    retries = next(p for p in command.params if p.name == "max_retries")
    assert "exit" in retries.help and "1" in retries.help
    assert "exit code 1" in (teach_command.__doc__ or "") and "2" in teach_command.__doc__
    key_env = next(p for p in command.params if p.name == "teacher_key_env")
    assert "OPENAI_API_KEY" in key_env.help


@pytest.mark.parametrize("option", ["--replay", "--teacher-config", "--cache"])
def test_a_folder_where_a_file_is_expected(option, data_dir, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    out = tmp_path / "out"
    teacher = [] if option == "--replay" else ["--replay", str(data_dir / "teacher" / "gsm8k_train_llama3-70b_cot.json")]
    args = ["teach", "--dataset", "gsm8k", "--limit", "2", "--thought", "cot", *teacher, option, str(folder),
            "--out", str(out), "--data-dir", str(data_dir), "--no-progress"]
    code, stdout, stderr = run_teach(args, capsys, monkeypatch)
    assert code == 2 and f"{option} {folder}: is a folder" in stderr and "Traceback" not in stderr, stderr
    assert not out.exists()
