import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from common.checkpoints import (
    LARGEST_CHECKPOINT_BYTES,
    CheckpointError,
    check_resumable,
    load,
    new_run_id,
    save,
    save_npz,
)
from common.geometry import is_trainable, parameter_shapes

TINY = dict(in_channels=1, out_channels=1, base_channels=2, depth=1, padding="same", norm="batch", skip=True)
OLD_FORMAT = (
    "is in an older checkpoint format (before model_args); retrain it with this version of 01_pytorch.py"
)


def random_state(model_args, seed=0):
    """Weights named and shaped as the network's, with random values; step counts as int64."""
    rng = np.random.default_rng(seed)
    return {
        name: np.array(7, np.int64)
        if name.endswith("num_batches_tracked")
        else rng.standard_normal(shape).astype(np.float32)
        for name, shape in parameter_shapes(model_args).items()
    }


def adam_state(state):
    """Adam's state_dict, as torch makes it, after one step on these weights."""
    params = [
        torch.nn.Parameter(torch.from_numpy(value.copy()))
        for name, value in state.items()
        if is_trainable(name)
    ]
    optimizer = torch.optim.Adam(params)
    sum((p**2).sum() for p in params).backward()
    optimizer.step()
    return optimizer.state_dict()


@pytest.fixture
def saved(tmp_path):
    """(net.pt path, the weights) after one `save` of TINY, which wrote net.npz beside it."""
    state = random_state(TINY)
    save(
        tmp_path / "net.pt",
        model_args=TINY,
        state={name: torch.from_numpy(value) for name, value in state.items()},  # as model.state_dict()
        optimizer=adam_state(state),
        config={"lr": 0.01, "steps": 30},
        run_id="run1",
        step=30,
    )
    return tmp_path / "net.pt", state


def write_pt(path, change=None):
    """A .pt as `save` writes it, for TINY, after `change(contents)` tampers with it."""
    state = random_state(TINY)
    contents = dict(
        model_args=dict(TINY),
        state_dict={name: torch.from_numpy(value) for name, value in state.items()},
        optimizer={},
        config={},
        run_id="r",
        step=1,
    )
    if change:
        change(contents)
    torch.save(contents, path)
    return path


def write_npz(path, change=None):
    """An .npz as `save_npz` writes it, for TINY, after `change(members)` tampers with it
    (members["model_args"] is a dict there, written as JSON)."""
    members = dict(model_args=dict(TINY), run_id=np.array("r"), step=np.array(1), **random_state(TINY))
    if change:
        change(members)
    np.savez(path, **members | {"model_args": np.array(json.dumps(members["model_args"]))})
    return path


def refusal(path):
    """load's one-line message for `path`, which must start with the path."""
    with pytest.raises(CheckpointError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path} ") and "\n" not in message
    return message


def assert_same_weights(loaded, state):
    assert list(loaded) == list(parameter_shapes(TINY))  # the state_dict's order
    for name, value in state.items():
        assert loaded[name].dtype == (np.int64 if name.endswith("num_batches_tracked") else np.float32)
        np.testing.assert_array_equal(loaded[name], value)


# ----------------------------------------------------------------------------- what loads


def test_a_pt_and_its_npz_hold_the_same_network_and_run(saved, capsys):
    pt, state = saved
    from_pt, from_npz = load(pt), load(pt.with_suffix(".npz"))
    for checkpoint in (from_pt, from_npz):
        assert checkpoint.model_args == TINY
        assert (checkpoint.run_id, checkpoint.step) == ("run1", 30)
        assert_same_weights(checkpoint.state, state)
    assert from_pt.config == {"lr": 0.01, "steps": 30}
    assert from_npz.optimizer is None and from_npz.config is None
    first = from_pt.optimizer["state"][0]["exp_avg"]  # Adam's first moment after one step: (1 - β1)·grad
    torch.testing.assert_close(first, 0.1 * 2 * torch.from_numpy(state["encoder.0.conv1.weight"]))
    check_resumable(from_pt, dict(TINY))
    assert capsys.readouterr().err == ""  # the two files are from one run: nothing to warn about


def test_a_lone_npz_round_trips_without_torch_state(tmp_path):
    state = random_state(TINY, seed=1)
    save_npz(tmp_path / "numpy.npz", model_args=TINY, state=state, run_id="np", step=5)
    checkpoint = load(tmp_path / "numpy.npz")
    assert (checkpoint.model_args, checkpoint.run_id, checkpoint.step) == (TINY, "np", 5)
    assert_same_weights(checkpoint.state, state)
    members = zipfile.ZipFile(tmp_path / "numpy.npz").namelist()  # plain arrays, one per name
    assert sorted(members) == sorted(f"{name}.npy" for name in ["model_args", "run_id", "step", *state])


def test_reading_an_npz_needs_no_torch(tmp_path):
    save_npz(tmp_path / "w.npz", model_args=TINY, state=random_state(TINY), run_id="r", step=1)
    program = "import sys; from common import checkpoints; checkpoints.load(sys.argv[1]); print(*sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", program, tmp_path / "w.npz"],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = loaded.stdout.split()
    assert "numpy" in modules and "torch" not in modules


def test_an_npz_with_a_pt_name_is_read_as_what_it_is(tmp_path):
    state = random_state(TINY)
    save_npz(tmp_path / "misnamed.pt", model_args=TINY, state=state, run_id="r", step=1)
    assert_same_weights(load(tmp_path / "misnamed.pt").state, state)


def test_run_ids_are_new_every_time():
    ids = {new_run_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(run_id) == 12 for run_id in ids)


def test_a_pt_and_npz_from_different_runs_are_named_on_stderr(saved, capsys):
    pt, state = saved
    npz = pt.with_suffix(".npz")
    save_npz(npz, model_args=TINY, state=state, run_id="run2", step=50)
    assert load(pt).run_id == "run1"
    assert capsys.readouterr().err.endswith(
        f": warning: {pt} and {npz} come from different runs "
        f"(run_id run1, step 30 vs run_id run2, step 50); {pt} is used\n"
    )
    npz.write_bytes(pt.read_bytes())
    load(pt)
    assert capsys.readouterr().err.endswith(f": warning: {npz} is not an .npz archive; {pt} is used\n")
    npz.write_bytes(b"not an archive")
    load(pt)
    assert capsys.readouterr().err.endswith(
        f": warning: {npz} is not a checkpoint (neither torch.save's format nor an .npz archive); "
        f"{pt} is used\n"
    )


# ----------------------------------------------------------------------------- what is refused


def test_files_that_are_not_checkpoints(tmp_path, saved):
    pt, _ = saved
    good_pt, good_npz = pt.read_bytes(), pt.with_suffix(".npz").read_bytes()
    (tmp_path / "folder.pt").mkdir()
    files = {
        "random.pt": np.random.default_rng(0).bytes(4096),
        "empty.pt": b"",
        "pickle.pt": pickle.dumps({"state_dict": {}}, protocol=5),
        "truncated.pt": good_pt[: len(good_pt) // 2],
        "truncated.npz": good_npz[: len(good_npz) // 2],
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("notes.txt", "a zip, but neither torch's nor NumPy's")
    with zipfile.ZipFile(pt) as good, zipfile.ZipFile(tmp_path / "garbled.pt", "w") as garbled:
        for info in good.infolist():  # torch's archive, with its pickle replaced by garbage
            garbled.writestr(info, b"garbage" if info.filename.endswith("/data.pkl") else good.read(info))
    for name, message in [
        ("missing.pt", "does not exist"),
        ("folder.pt", "is a folder, not a checkpoint file"),
        ("empty.pt", "is empty"),
        ("random.pt", "is not a checkpoint (neither torch.save's format nor an .npz archive)"),
        ("other.zip", "is not a checkpoint (neither torch.save's format nor an .npz archive)"),
        ("pickle.pt", "is a plain pickle (protocol 5), not a checkpoint written by torch.save"),
        ("truncated.pt", "is damaged or truncated"),
        ("truncated.npz", "is damaged or truncated"),
        ("garbled.pt", "is damaged or truncated (its pickle is unreadable)"),
    ]:
        assert message in refusal(tmp_path / name)


def test_a_file_larger_than_the_largest_network_is_refused_unread(tmp_path):
    with open(tmp_path / "huge.pt", "wb") as file:
        file.truncate(LARGEST_CHECKPOINT_BYTES + 1)  # sparse: nothing is written to disk
    assert refusal(tmp_path / "huge.pt").endswith(
        f"is {LARGEST_CHECKPOINT_BYTES + 1:,} bytes, more than a checkpoint of the largest network allowed "
        f"can be ({LARGEST_CHECKPOINT_BYTES:,} bytes at depth 6, base_channels 128); refused unread"
    )
    assert LARGEST_CHECKPOINT_BYTES == 1_990_761_756 * 8 * 3 + 2**20  # 2.0 billion parameters


class RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_file_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"state_dict": RunsCode(marker)}, tmp_path / "evil.pt")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(RunsCode(marker), protocol=5))
    assert (
        "was refused: loading it would call posix.system, and this project never runs code from a file"
        in (refusal(tmp_path / "evil.pt"))
    )
    assert "is a plain pickle (protocol 5)" in refusal(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_the_older_format_gets_one_line_in_both_kinds(tmp_path):
    def before_model_args(contents):
        for key in ("model_args", "run_id", "step"):
            del contents[key]

    old_pt = write_pt(tmp_path / "old.pt", before_model_args)
    old_npz = tmp_path / "old.npz"
    np.savez(old_npz, config=np.array(json.dumps(TINY)), **random_state(TINY))
    assert refusal(old_pt) == f"{old_pt} {OLD_FORMAT}"
    assert refusal(old_npz) == f"{old_npz} {OLD_FORMAT}"


def as_written_before_group_norm(model_args, state):
    """model_args and weights as files said them before `norm`: batchnorm=true/false, bn1/bn2."""
    earlier = {key: value for key, value in model_args.items() if key != "norm"}
    earlier["batchnorm"] = model_args["norm"] == "batch"
    return earlier, {name.replace(".norm", ".bn"): value for name, value in state.items()}


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_files_from_before_group_norm_read_as_today_in_both_kinds(tmp_path, norm):
    model_args = TINY | dict(norm=norm)
    state = random_state(model_args)
    earlier_args, earlier_state = as_written_before_group_norm(model_args, state)
    assert any(".bn1." in name for name in earlier_state) == (norm == "batch")
    tensors = {name: torch.from_numpy(value) for name, value in earlier_state.items()}
    pt = tmp_path / "earlier.pt"
    torch.save(
        dict(model_args=earlier_args, state_dict=tensors, optimizer={}, config={}, run_id="r", step=1), pt
    )
    npz = tmp_path / "lone.npz"
    np.savez(
        npz,
        model_args=np.array(json.dumps(earlier_args)),
        run_id=np.array("r"),
        step=np.array(1),
        **earlier_state,
    )
    for path in (pt, npz):
        checkpoint = load(path)
        assert checkpoint.model_args == model_args and list(checkpoint.model_args)[-1] == "norm"
        assert list(checkpoint.state) == list(parameter_shapes(model_args))
        for name, value in state.items():
            np.testing.assert_array_equal(checkpoint.state[name], value)


def test_a_crafted_file_from_before_group_norm_is_one_line_too(tmp_path):
    earlier_args, earlier_state = as_written_before_group_norm(TINY, random_state(TINY))
    tensors = {name: torch.from_numpy(value) for name, value in earlier_state.items()} | {5: torch.zeros(1)}
    pt = tmp_path / "crafted.pt"
    torch.save(
        dict(model_args=earlier_args, state_dict=tensors, optimizer={}, config={}, run_id="r", step=1), pt
    )
    assert refusal(pt) == f"{pt} does not fit its model_args: it has 5, which this network does not"


def test_an_earlier_file_naming_one_weight_twice_is_refused(tmp_path):
    earlier_args, earlier_state = as_written_before_group_norm(TINY, random_state(TINY))
    both = earlier_state | {"encoder.0.norm1.weight": earlier_state["encoder.0.bn1.weight"] * 2}
    npz = tmp_path / "both.npz"
    np.savez(
        npz, model_args=np.array(json.dumps(earlier_args)), run_id=np.array("r"), step=np.array(1), **both
    )
    assert refusal(npz) == f"{npz} has both encoder.0.bn1.weight and encoder.0.norm1.weight"


def test_names_from_a_file_are_shown_on_one_short_line(tmp_path):
    for name in ("zzz\nTraceback (most recent call last):", "q" * 3_000_000):
        pt = write_pt(
            tmp_path / "named.pt", lambda c, name=name: c["state_dict"].update({name: torch.zeros(1)})
        )
        message = refusal(pt)
        assert len(message) < 250 and "which this network does not" in message


def test_a_group_norm_network_round_trips_without_running_statistics(tmp_path):
    model_args = TINY | dict(norm="group", base_channels=4)
    state = random_state(model_args)
    assert "encoder.0.norm1.weight" in state and not any("running" in name for name in state)
    save_npz(tmp_path / "g.npz", model_args=model_args, state=state, run_id="g", step=2)
    checkpoint = load(tmp_path / "g.npz")
    assert checkpoint.model_args == model_args and list(checkpoint.state) == list(state)


def set_weight(name, value):
    """A change to a .pt's or .npz's weights: `name` gets `value`."""

    def change(contents):
        weights = contents.get("state_dict", contents)
        weights[name] = torch.as_tensor(value) if "state_dict" in contents else np.asarray(value)

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(state_dict=[1, 2]), "has a state_dict of a list, not a dict"),
        (lambda c: c.update(config=["lr", 0.01]), "has a config of a list, not a dict"),
        (lambda c: c.update(step=-1), "has a step of -1, not a count of steps"),
        (lambda c: c.update(run_id=7), "has a run_id of 7, not a string"),
        (lambda c: c.update(step=2**63), "has a step of 9223372036854775808, not a count of steps"),
        (
            lambda c: c["state_dict"].update({5: torch.zeros(1), "zzz": torch.zeros(1)}),
            "it has 5, which this",
        ),
        (
            lambda c: c.update(epoch=3),
            "is not a checkpoint of this project: it has model_args, state_dict, optimizer, config, run_id, "
            "step, epoch where model_args, state_dict, optimizer, config, run_id, step belong",
        ),
        (lambda c: c["state_dict"].update({"head.bias": [0.0]}), "whose head.bias is a list, not a tensor"),
        (
            set_weight("head.bias", torch.zeros(1).to_sparse()),
            "has head.bias in a layout NumPy cannot hold (can't convert Sparse layout tensor to numpy",
        ),
    ],
)
def test_a_pt_is_refused_for_what_it_holds(tmp_path, change, message):
    assert message in refusal(write_pt(tmp_path / "net.pt", change))


def model_args_change(**changes):
    def change(contents):
        contents["model_args"].update(changes)

    return change


@pytest.mark.parametrize("write, name", [(write_pt, "net.pt"), (write_npz, "net.npz")])
@pytest.mark.parametrize(
    "change, message",
    [
        (model_args_change(padding="full"), "has model_args padding='full', not one of same, valid"),
        (model_args_change(depth="three"), "has model_args depth='three', not an integer"),
        (model_args_change(depth=2.0), "has model_args depth=2.0, not an integer"),
        (model_args_change(skip=1), "has model_args skip=1, not true or false"),
        (model_args_change(norm="layer"), "has model_args norm='layer', not one of batch, group, none"),
        (model_args_change(depth=0), "has model_args depth=0, outside the allowed 1 to 6"),
        (
            model_args_change(base_channels=256),
            "has model_args base_channels=256, outside the allowed 1 to 128",
        ),
        (
            model_args_change(in_channels=3),
            "has model_args in_channels=3, but the project's images are grey; "
            "this network expects 3 channels",
        ),
        (
            model_args_change(out_channels=3),
            "has model_args out_channels=3, where 1 (a logit per pixel) "
            "or 2 (the paper's two-class soft-max) are allowed",
        ),
        (model_args_change(dropout=0.5), "has a model_args with 'dropout', which UNet does not take"),
        (lambda c: c["model_args"].pop("skip"), "has a model_args that lacks skip"),
        (
            set_weight("encoder.0.conv1.weight", np.zeros((4, 1, 3, 3), np.float32)),
            "does not fit its model_args: "
            "encoder.0.conv1.weight is (4, 1, 3, 3) where this network has (2, 1, 3, 3)",
        ),
        (
            set_weight("extra.weight", np.zeros(1, np.float32)),
            "it has extra.weight, which this network does not",
        ),
        (
            lambda c: c.get("state_dict", c).pop("head.bias"),
            "does not fit its model_args: it lacks head.bias (1,)",
        ),
        (
            set_weight("encoder.0.norm1.running_var", [1.0, np.nan]),
            "has encoder.0.norm1.running_var holding NaN or infinite values",
        ),
        (set_weight("head.bias", [-np.inf]), "has head.bias holding NaN or infinite values"),
        (set_weight("head.bias", [1e300]), "has head.bias holding NaN or infinite values"),  # inf in float32
        (
            set_weight("head.bias", np.array([1 + 2j], np.complex64)),
            "has head.bias of complex64 where real numbers belong",
        ),
        (set_weight("head.bias", [True]), "has head.bias of bool where real numbers belong"),
        (
            set_weight("bottleneck.norm2.num_batches_tracked", np.array(7.0, np.float32)),
            "has bottleneck.norm2.num_batches_tracked of float32 where integers belong",
        ),
    ],
)
def test_model_args_and_weights_are_checked_in_both_kinds(tmp_path, write, name, change, message):
    assert message in refusal(write(tmp_path / name, change))


@pytest.mark.parametrize(
    "change, message",
    [
        (set_weight("head.bias", np.array(["abc"])), "has head.bias of <U3 where real numbers belong"),
        (
            set_weight("head.bias", np.array([None], dtype=object)),
            "holds Python objects that only pickle could load; refused, since unpickling can run code",
        ),
        (lambda m: m.pop("run_id"), "lacks run_id as a string of at most 65,536 bytes"),
        (lambda m: m.update(step=np.array("ten")), "lacks step as an integer of at most 65,536 bytes"),
        (lambda m: m.update(step=np.array(-3)), "has a step of -3, not a count of training steps"),
        (lambda m: m.update(model_args=["depth", 1]), "has a model_args that is a list, not a dict"),
    ],
)
def test_an_npz_is_refused_for_what_it_holds(tmp_path, change, message):
    assert message in refusal(write_npz(tmp_path / "net.npz", change))


def test_an_npz_whose_model_args_is_not_json(tmp_path):
    path = tmp_path / "net.npz"
    np.savez(
        path, model_args=np.array("{depth: 3"), run_id=np.array("r"), step=np.array(1), **random_state(TINY)
    )
    assert refusal(path) == f"{path} has a model_args that is not JSON of a dict"


@pytest.fixture
def members_read(monkeypatch):
    """The .npz members that np.load is asked for, in order."""
    read = []
    original = np.lib.npyio.NpzFile.__getitem__

    def spy(archive, name):
        read.append(name)
        return original(archive, name)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", spy)
    return read


def test_an_npz_too_deep_is_refused_before_any_weight_is_read(tmp_path, members_read):
    path = write_npz(tmp_path / "deep.npz", model_args_change(depth=11))
    assert refusal(path) == f"{path} has model_args depth=11, outside the allowed 1 to 6"
    assert members_read == ["model_args"]


def test_a_member_declaring_more_than_its_shape_is_refused_undecompressed(tmp_path, members_read):
    path = write_npz(tmp_path / "bomb.npz", lambda members: members.pop("head.bias"))
    header = io.BytesIO()
    np.lib.format.write_array(header, np.zeros(1, np.float32))  # head.bias: 128 header bytes and 4 of data
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("head.bias.npy", header.getvalue() + bytes(2**24))
    assert path.stat().st_size < 2**16  # 16 MiB of zeros, deflated: a small zip bomb
    assert refusal(path) == (
        f"{path} has a member head.bias that declares 16,777,348 bytes where its shape (1,) of float32 "
        "takes 132; refused without decompressing it"
    )
    assert members_read == []


# ----------------------------------------------------------------------------- resuming


def test_resuming_needs_the_same_network(saved):
    checkpoint = load(saved[0])
    with pytest.raises(CheckpointError) as caught:
        check_resumable(checkpoint, TINY | dict(depth=2, skip=False))
    assert str(caught.value) == (
        f"{saved[0]} was trained with depth=1 (this run: 2), skip=True (this run: False); "
        "pass the same options to resume it"
    )


def test_resuming_needs_the_optimizer_state_of_a_pt(saved):
    with pytest.raises(CheckpointError, match="holds weights only, no optimizer state; resume from the .pt"):
        check_resumable(load(saved[0].with_suffix(".npz")), TINY)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda o: o["state"][0].update(exp_avg=torch.zeros(5)),
            "encoder.0.conv1.weight's exp_avg is (5,) where encoder.0.conv1.weight is (2, 1, 3, 3)",
        ),
        (
            lambda o: o["state"][3]["exp_avg_sq"].fill_(float("nan")),
            "encoder.0.conv2.weight's exp_avg_sq holds NaN or infinite values",
        ),
        (
            lambda o: o["state"][2].pop("step"),
            "the entry for encoder.0.norm1.bias lacks one of the tensors step",
        ),
        (lambda o: o["state"].update({99: {}}), "its state is not a dict from parameter numbers 0 to 21"),
        (lambda o: o["param_groups"][0].update(params=[0, 1]), "does not number the 22 parameters 0 to 21"),
        (lambda o: o["param_groups"].append({}), "its param_groups is not a list of one group"),
        (lambda o: o["state"][1].update(step=torch.ones(5)), "encoder.0.norm1.weight's step is not a count"),
        (lambda o: o["state"][1].update(step=torch.tensor(float("nan"))), "step is not a count of steps"),
        (lambda o: o["state"][3]["exp_avg_sq"].fill_(-1.0), "exp_avg_sq, a mean of squares, is negative"),
    ],
)
def test_resuming_needs_an_adam_state_that_fits_the_weights(saved, change, message):
    checkpoint = load(saved[0])
    change(checkpoint.optimizer)
    with pytest.raises(CheckpointError) as caught:
        check_resumable(checkpoint, TINY)
    assert str(caught.value).startswith(f"{saved[0]} has an optimizer state that does not fit its weights: ")
    assert message in str(caught.value)


def test_what_could_hang_or_inflate_is_refused_unread(tmp_path, monkeypatch):
    import common.checkpoints

    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)  # opening it would wait for a writer for ever
    assert refusal(fifo) == f"{fifo} is not a regular file"
    # A zip whose member inflates beyond any checkpoint: 16 MB of zeros against a limit of 1 MB
    # here (the real limit, 48 GB, would take minutes to compress).
    monkeypatch.setattr(common.checkpoints, "LARGEST_CHECKPOINT_BYTES", 2**20)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"")
        archive.writestr("archive/data/0", bytes(2**24))
    assert bomb.stat().st_size < 2**20
    assert (
        refusal(bomb) == f"{bomb} would inflate to {2**24:,} bytes, more than any checkpoint; refused unread"
    )


def test_a_crafted_model_args_is_one_line(tmp_path):
    deep = tmp_path / "deep.npz"
    np.savez(deep, model_args=np.array("[" * 5000 + "]" * 5000), run_id=np.array("r"), step=np.array(0))
    assert refusal(deep).endswith("has a model_args that is not JSON of a dict")
