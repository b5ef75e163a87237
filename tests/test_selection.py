"""The one activation-list parser and the one device parser every command shares (actkit.selection)."""
import pytest
import torch

from actkit import registry, selection


class CommandError(ValueError):
    """Stands for a command's own exception class (TrainError, BenchError)."""


def test_names_aliases_order_and_repeats():
    assert selection.activation_names("relu, Swish,,gelu,silu ,RELU") == ["relu", "silu", "gelu"]
    assert selection.activation_names(["relu,gelu", "mish"]) == ["relu", "gelu", "mish"]


def test_all_is_what_the_command_can_use():
    assert selection.activation_names("all") == registry.available()
    trainable = selection.activation_names("all", selection.TRAINABLE)
    slot = selection.activation_names("all", selection.NETWORK_SLOT)
    # step fills a slot (memory counts its bytes) but has no gradient to train with; softmax and the GLUs
    # are no pointwise activations; prelu (learnable) is both
    assert "step" in slot and "step" not in trainable
    assert {"relu", "gelu", "prelu"} <= set(trainable) and not {"softmax", "swiglu"} & set(slot)
    assert set(trainable) < set(slot) < set(registry.available())


@pytest.mark.parametrize("need,text,message", [
    (selection.TRAINABLE, "softmax", "softmax is a rowwise function, not a pointwise activation"),
    (selection.TRAINABLE, "step", "step has no gradient, so a network using it cannot be trained"),
    (selection.NETWORK_SLOT, "softmax", "softmax is a row-wise activation"),
    (selection.CURVE, "reglu", "reglu is a gated linear unit"),
    (selection.TOY_MLP, "step", "step cannot be used in the toy MLP: it has no gradient"),
])
def test_each_command_words_its_refusal(need, text, message):
    with pytest.raises(CommandError, match=message) as caught:
        selection.parse_activations(f"relu,{text}", need, error=CommandError)
    assert "\n" not in str(caught.value)


def test_parameters_and_the_commands_that_take_none():
    choice, = selection.parse_activations("leaky_relu:negative_slope=0.1")
    assert choice.label == "leaky_relu_negative_slope=0.1" and choice.params == {"negative_slope": 0.1}
    with pytest.raises(CommandError, match="leaky_relu_negative_slope=0.1: this command takes activation names"):
        selection.activation_names("relu,leaky_relu:negative_slope=0.1", error=CommandError)
    with pytest.raises(CommandError, match="unknown activation 'mishh'.*'mish'"):
        selection.activation_names("mishh", error=CommandError)
    with pytest.raises(CommandError, match="no activation given"):
        selection.activation_names(" , ", error=CommandError)


def test_devices():
    assert selection.parse_device(" CPU ") == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert selection.parse_device(None) == selection.parse_device("") == selection.parse_device("auto") == expected
    with pytest.raises(CommandError, match="unknown device 'tpu'; use auto, cpu, cuda or cuda:N"):
        selection.parse_device("tpu", error=CommandError)
    with pytest.raises(selection.SelectionError, match="unsupported device 'cuda:x'; choose cuda or cpu"):
        selection.parse_device("cuda:x", unknown="unsupported device {value!r}; choose cuda or cpu")
    with pytest.raises(CommandError, match="does not exist|CUDA is not available"):
        selection.parse_device(f"cuda:{torch.cuda.device_count()}", error=CommandError)
