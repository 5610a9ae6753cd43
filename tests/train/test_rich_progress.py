"""train-student's console: one rich bar with the loss instead of tqdm and printed log dicts."""

from __future__ import annotations

from types import SimpleNamespace

from transformers.trainer_callback import CallbackHandler, PrinterCallback, ProgressCallback

from retrodistill.train.progress import RichProgress, use_rich_progress


def test_the_bar_follows_steps_and_shows_the_loss() -> None:
    callback = RichProgress()
    state = SimpleNamespace(is_world_process_zero=True, global_step=3, max_steps=10, epoch=0.3)
    callback.on_train_begin(None, state, None)
    task = callback._bar.tasks[0]
    assert task.completed == 3 and task.total == 10  # a resumed run starts where its checkpoint was
    state.global_step = 4
    callback.on_step_end(None, state, None)
    callback.on_log(None, state, None, logs={"loss": 0.01234, "grad_norm": 1.0})
    assert task.completed == 4 and "loss 0.01234" in task.description
    callback.on_log(None, state, None, logs={"train_runtime": 1.0})  # no loss: the label stays
    assert "loss 0.01234" in task.description
    callback.on_train_end(None, state, None)
    assert callback._bar is None


def test_other_ranks_draw_nothing() -> None:
    callback = RichProgress()
    state = SimpleNamespace(is_world_process_zero=False, global_step=0, max_steps=10, epoch=0.0)
    callback.on_train_begin(None, state, None)
    callback.on_step_end(None, state, None)
    callback.on_log(None, state, None, logs={"loss": 1.0})
    assert callback._bar is None


def test_the_trainers_printers_are_replaced() -> None:
    handler = CallbackHandler([ProgressCallback(), PrinterCallback()], None, None, None, None)
    trainer = SimpleNamespace(
        remove_callback=handler.remove_callback, add_callback=handler.add_callback, handler=handler
    )
    use_rich_progress(trainer, enabled=True)
    assert [type(c) for c in handler.callbacks] == [RichProgress]
    handler2 = CallbackHandler([ProgressCallback()], None, None, None, None)
    use_rich_progress(
        SimpleNamespace(remove_callback=handler2.remove_callback, add_callback=handler2.add_callback), False
    )
    assert handler2.callbacks == []
