"""The command line: a whole train/resume/plot/eval/list cycle, and every bad-input case."""

import json

import pytest

import pgkit
from pgkit import cli, recipe
from pgkit.recipes import ppo

SMALL = ["--set", "num_envs=4", "--set", "num_steps=32", "--set", "epochs=2", "--set", "minibatches=2"]


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_resume_plot_eval_list(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "ppo", "--env", "CartPole-v1", "--seeds", "2", "--steps", "768", *SMALL, "--chunk", "2"]
    code, stdout, err = run([*argv, "--out", str(out)], capsys)
    assert code == 0, err
    assert "steps/s" in stdout and "final return" in stdout and "IQM" in stdout
    assert (out / "learning_curve.png").stat().st_size > 0
    code, stdout, err = run(["resume", str(out)], capsys)
    assert code == 0, err  # a finished run resumes to a no-op
    code, stdout, err = run(["plot", str(out), str(out), "--out", str(tmp_path / "overlay.png")], capsys)
    assert code == 0, err
    assert (tmp_path / "overlay.png").exists()
    code, stdout, err = run(["eval", str(out), "--episodes", "2"], capsys)
    assert code == 0, err
    assert "eval" in stdout and "mean return" in stdout
    code, stdout, err = run(["list"], capsys)
    assert code == 0 and "ppo" in stdout and "CartPole-v1" in stdout and "clip_eps" in stdout


def test_a_checkpoint_that_does_not_fit_is_one_line_and_exit_status_2(tmp_path, capsys):
    # e.g. written by a pgkit whose networks were laid out otherwise: here the config is edited
    out = tmp_path / "run"
    argv = ["train", "ppo", "--seeds", "1", "--steps", "256", *SMALL, "--set", "hidden_sizes=8", "--out", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    spec = json.loads((out / "config.json").read_text())
    assert spec["pgkit_version"] == pgkit.__version__
    spec["config"]["hidden_sizes"] = [16]
    # a whole checkpoint (its checksum holds) that does not fit: a changed recipe, or another version
    for written_by, cause in ((pgkit.__version__, "the recipe now builds another state"),
                              ("0.2.0", "written by pgkit 0.2.0; retrain with this version")):
        (out / "config.json").write_text(json.dumps({**spec, "pgkit_version": written_by}))
        for command in (["eval", str(out), "--episodes", "1"], ["resume", str(out)]):
            code, _, err = run(command, capsys)
            assert code == 2
            assert "checkpoint-0000002.eqx' does not fit the 'ppo' state of pgkit" in err and cause in err, err
            assert "corrupt" not in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_members_and_threads_are_read_before_jax_starts(tmp_path):
    def layout(argv):
        return cli.cpu_layout(cli.build_parser().parse_args(argv))

    assert layout(["train", "ppo", "--seeds", "3", "--sweep", "lr=1e-3,3e-4", "--sweep", "gamma=0.9,0.99,0.999"]) == (18, None)
    assert layout(["train", "ppo", "--threads", "2"]) == (8, 2)
    (tmp_path / "config.json").write_text(json.dumps({"seeds": 4, "sweep": {"lr": [1e-3, 3e-4]}, "xla_cpu_threads": 1}))
    assert layout(["resume", str(tmp_path)]) == (8, 1)  # the thread count it was trained with
    assert layout(["eval", str(tmp_path / "missing")]) == (None, None)  # the command itself reports it
    assert layout(["list"]) == (None, None)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "nope"], "unknown recipe 'nope'"),
        (["train", "ppo", "--env", "Nope-v0"], "unknown environment 'Nope-v0'; available: "),
        (["train", "ppo", "--set", "nope=1"], "unknown option 'nope'"),
        (["train", "ppo", "--set", "epochs=two"], "option 'epochs' expects int"),
        (["train", "ppo", "--set", "lr=fast"], "option 'lr' expects float"),
        (["train", "ppo", "--set", "hidden_sizes=wide"], "option 'hidden_sizes' expects integers, as 64,64 or 64x64"),
        (["train", "ppo", "--set", "gamma=2"], "option 'gamma' must be"),
        (["train", "ppo", "--set", "objective=trust"], "option 'objective' must be one of clip, adaptive_kl"),
        (["train", "ppo", "--set", "lr"], "--set expects NAME=VALUE"),
        (["train", "ppo", "--sweep", "epochs=1,2"], "cannot sweep 'epochs'"),
        (["train", "ppo", "--sweep", "lr=1e-3,-1"], "option 'lr' must be > 0"),
        (["train", "ppo", "--seeds", "0"], "'--seeds' must be >= 1"),
        (["train", "ppo", "--seeds", "many"], "--seeds: invalid int value"),
        (["train", "ppo", "--threads", "0"], "'--threads' must be >= 1"),
        (["train", "ppo", "--steps", "10"], "shorter than one update"),
        (["train", "ppo", "--observe", "0,7"], "option '--observe': observe must list distinct observation indices in 0..3"),
        (["train", "ppo", "--observe", "0,x"], "option '--observe' expects comma-separated integers, got '0,x'"),
        (["train", "ppo", "--env", "CartPole-v1[0,2]", "--observe", "1"], "contradicts --env CartPole-v1[0,2]"),
        (["resume", "does/not/exist"], "run directory 'does/not/exist' not found"),
        (["eval", "does/not/exist"], "run directory 'does/not/exist' not found"),
        (["plot", "does/not/exist"], "run directory 'does/not/exist' not found"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(argv, message, capsys, tmp_path):
    if argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / "run")]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_an_environment_that_cannot_be_made_here_is_one_line_and_exit_status_1(offline_gymnax, capsys):
    code, _, err = run(["train", "ppo", "--env", "MNISTBandit-bsuite", "--steps", "512", *SMALL], capsys)
    assert code == 1
    assert err.startswith("pgkit: error: environment 'MNISTBandit-bsuite' could not be created") and err.count("\n") == 1


def test_observe_trains_on_the_listed_components(tmp_path, capsys):
    out = tmp_path / "partial"
    argv = ["train", "ppo", "--observe", "0,2", "--seeds", "2", "--steps", "256", *SMALL, "--out", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["env"] == "CartPole-v1[0,2]"


def test_a_tuple_option_reads_commas_x_and_brackets():
    for text in ("64,32", "64x32", "(64,32)", "[64, 32]"):
        assert recipe.parse_option(ppo.Config, "hidden_sizes", text) == (64, 32), text
    assert recipe.parse_option(ppo.Config, "hidden_sizes", "()") == ()
