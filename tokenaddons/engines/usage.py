"""Token usage of one exchange, in one shape for every provider."""
from __future__ import annotations

from dataclasses import dataclass

MAX_TOKENS = 1 << 53  # far beyond any real exchange, and exact as a float
COUNTS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_5m_tokens",
          "cache_write_1h_tokens", "output_tokens", "reasoning_tokens")


@dataclass
class Usage:
    # input_tokens counts ALL prompt tokens, cache reads and writes included, so
    # totals compare across providers (Anthropic reports them apart, OpenAI and
    # Gemini include them).
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0  # already included in output_tokens
    estimated: bool = False  # counted locally, not reported by the provider

    def __post_init__(self) -> None:
        # what a provider reports is checked here, once: a count that is not
        # one (a string, an object, a negative number) would price wrong and
        # poison every sum it is added to
        for name in COUNTS:
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_TOKENS:  # type(): a bool is no count
                raise ValueError(f"usage {name} is not a token count: {value!r:.100}")

    @property
    def uncached_input_tokens(self) -> int:
        return max(0, self.input_tokens - self.cache_read_tokens - self.cache_write_tokens)

    def as_row(self) -> dict:
        # written out: dataclasses.asdict is several times slower, and this runs for every row
        return {"input_tokens": self.input_tokens, "cache_read_tokens": self.cache_read_tokens,
                "cache_write_tokens": self.cache_write_tokens, "cache_write_5m_tokens": self.cache_write_5m_tokens,
                "cache_write_1h_tokens": self.cache_write_1h_tokens, "output_tokens": self.output_tokens,
                "reasoning_tokens": self.reasoning_tokens, "estimated": int(self.estimated)}
