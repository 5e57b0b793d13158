"""The tokens of a Redshift statement, shared by translate.py and copy.py: sqlglot's Redshift
tokenizer (quotes, comments and dollar strings handled), the keyword of a token, the ")" closing a
"(", and `Unsupported`, the error both raise for what the local stand-in refuses.
"""

from __future__ import annotations

from sqlglot.dialects.redshift import Redshift
from sqlglot.tokens import Token, TokenType

QUOTED = {
    TokenType.STRING,
    TokenType.IDENTIFIER,
    TokenType.BYTE_STRING,
    TokenType.HEREDOC_STRING,
    TokenType.NATIONAL_STRING,
    TokenType.RAW_STRING,
    TokenType.BIT_STRING,
    TokenType.HEX_STRING,
    TokenType.UNICODE_STRING,
}
_DIALECT = Redshift()


class Unsupported(Exception):
    """A statement the local stand-in refuses rather than run with another meaning."""


def word(token: Token) -> str:
    """The token as an upper-case keyword ("" for quoted strings and identifiers)."""
    return "" if token.token_type in QUOTED else token.text.upper()


def tokenize(sql: str) -> list[Token]:
    return list(_DIALECT.tokenize(sql))


def matching(tokens: list[Token], i: int) -> int:
    """Index of the ")" closing the "(" at tokens[i]."""
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j].token_type == TokenType.L_PAREN:
            depth += 1
        elif tokens[j].token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return j
    raise Unsupported("ERROR: syntax error: unbalanced parentheses")
