from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Message(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class PromptResponse(_message.Message):
    __slots__ = ("prompt", "response")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    response: str
    def __init__(self, prompt: _Optional[str] = ..., response: _Optional[str] = ...) -> None: ...

class Conversation(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("pair", "conversation", "text")
    PAIR_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    pair: PromptResponse
    conversation: Conversation
    text: str
    def __init__(self, pair: _Optional[_Union[PromptResponse, _Mapping]] = ..., conversation: _Optional[_Union[Conversation, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("inputs", "model", "priority", "normalize", "clip")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[Item]
    model: str
    priority: int
    normalize: bool
    clip: float
    def __init__(self, inputs: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., model: _Optional[str] = ..., priority: _Optional[int] = ..., normalize: _Optional[bool] = ..., clip: _Optional[float] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("model", "version", "rewards", "truncated", "tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    rewards: _containers.RepeatedScalarFieldContainer[float]
    truncated: _containers.RepeatedScalarFieldContainer[bool]
    tokens: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., rewards: _Optional[_Iterable[float]] = ..., truncated: _Optional[_Iterable[bool]] = ..., tokens: _Optional[int] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("prompt", "messages", "responses", "model", "top_k", "priority", "normalize", "clip")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    responses: _containers.RepeatedScalarFieldContainer[str]
    model: str
    top_k: int
    priority: int
    normalize: bool
    clip: float
    def __init__(self, prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., responses: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., top_k: _Optional[int] = ..., priority: _Optional[int] = ..., normalize: _Optional[bool] = ..., clip: _Optional[float] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("model", "version", "rewards", "ranking", "best")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    rewards: _containers.RepeatedScalarFieldContainer[float]
    ranking: _containers.RepeatedScalarFieldContainer[int]
    best: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., rewards: _Optional[_Iterable[float]] = ..., ranking: _Optional[_Iterable[int]] = ..., best: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelCard(_message.Message):
    __slots__ = ("name", "version", "backend", "device", "dtype", "max_length")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    backend: str
    device: str
    dtype: str
    max_length: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., max_length: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "max_inputs_per_request")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelCard]
    max_inputs_per_request: int
    def __init__(self, models: _Optional[_Iterable[_Union[ModelCard, _Mapping]]] = ..., max_inputs_per_request: _Optional[int] = ...) -> None: ...
