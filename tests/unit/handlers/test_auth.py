"""HS256 verification (stdlib) cross-checked against PyJWT; authorizer policy. Pure logic, no stack."""

from __future__ import annotations

import time

import jwt as pyjwt
import pytest

from ecom_core import config
from handlers.auth import AuthError, authenticate, mint, verify_jwt
from handlers.authorizer import policy_for

AUTH = config.Auth(
    jwt_secret="unit-test-secret-unit-test-secret-0000",
    jwt_issuer="iss-x",
    jwt_audience="aud-y",
    operator_key="op-key-for-unit-tests",
)
NOW = 1_700_000_000


def claims(**over):
    return {"iss": "iss-x", "aud": "aud-y", "sub": "14911", "iat": NOW, "exp": NOW + 600, **over}


def test_our_tokens_verify_in_pyjwt_and_theirs_in_ours():
    ours = mint(14911, ttl_seconds=600, now=NOW, auth=AUTH)
    decoded = pyjwt.decode(
        ours, AUTH.jwt_secret, algorithms=["HS256"], audience="aud-y", issuer="iss-x", options={"verify_exp": False}
    )
    assert decoded["sub"] == "14911" and decoded["exp"] == NOW + 600
    theirs = pyjwt.encode(claims(), AUTH.jwt_secret, algorithm="HS256", headers={"kid": "k1"})
    principal = verify_jwt(theirs, auth=AUTH, now=NOW + 1)
    assert (principal.role, principal.customer_id, principal.expires_at) == ("customer", 14911, NOW + 600)


@pytest.mark.parametrize(
    "token,message",
    [
        (pyjwt.encode(claims(), None, algorithm="none"), "algorithm 'none' is not accepted"),
        (pyjwt.encode(claims(), AUTH.jwt_secret + "x" * 40, algorithm="HS512"), "algorithm 'HS512'"),
        (pyjwt.encode(claims(), "another-secret-another-secret-00000", algorithm="HS256"), "signature is not valid"),
        (pyjwt.encode(claims(exp=NOW - 31), AUTH.jwt_secret, algorithm="HS256"), "expired"),
        (pyjwt.encode(claims(nbf=NOW + 31), AUTH.jwt_secret, algorithm="HS256"), "not valid yet"),
        (pyjwt.encode(claims(aud="other"), AUTH.jwt_secret, algorithm="HS256"), "audience"),
        (pyjwt.encode(claims(iss="other"), AUTH.jwt_secret, algorithm="HS256"), "issuer"),
        (pyjwt.encode(claims(sub="0"), AUTH.jwt_secret, algorithm="HS256"), "subject"),
        (pyjwt.encode({k: v for k, v in claims().items() if k != "exp"}, AUTH.jwt_secret, algorithm="HS256"), "no exp"),
        (pyjwt.encode(claims(role="operator"), AUTH.jwt_secret, algorithm="HS256"), "role is not accepted"),
        ("a.b", "not a JWT"),
        ("x" * 5000, "too long"),
        ("e30.e30.", "algorithm"),  # {} header
        ("!!!.e30.e30", "base64url"),
    ],
)
def test_rejections_name_the_reason(token, message):
    with pytest.raises(AuthError) as info:
        verify_jwt(token, auth=AUTH, now=NOW)
    assert message in str(info.value)


def test_leeway_and_operator_key():
    token = pyjwt.encode(claims(exp=NOW - 29), AUTH.jwt_secret, algorithm="HS256")
    assert verify_jwt(token, auth=AUTH, now=NOW).customer_id == 14911  # within the 30 s leeway
    assert authenticate("Operator op-key-for-unit-tests", auth=AUTH).role == "operator"
    assert authenticate("  bearer " + token, auth=AUTH, now=NOW).customer_id == 14911
    for header in (None, "", "Bearer", "Operator wrong", "Basic abc", "op-key-for-unit-tests"):
        with pytest.raises(AuthError):
            authenticate(header, auth=AUTH, now=NOW)


def test_authorizer_policy_names_every_allowed_route():
    arn = "arn:aws:execute-api:us-east-1:000000000000:api1/test/GET/invoices/536365"
    customer = verify_jwt(mint(14911, now=time.time(), auth=AUTH), auth=AUTH)
    policy = policy_for(customer, arn)
    assert policy["principalId"] == "14911"
    assert policy["policyDocument"]["Statement"][0]["Resource"] == [
        "arn:aws:execute-api:us-east-1:000000000000:api1/test/GET/customers/14911/invoices",
        "arn:aws:execute-api:us-east-1:000000000000:api1/test/GET/invoices/*",
    ]
    assert policy["context"] == {"role": "customer", "sub": "14911", "customerId": "14911"}
    operator = authenticate("Operator op-key-for-unit-tests", auth=AUTH)
    assert policy_for(operator, arn)["policyDocument"]["Statement"][0]["Resource"] == [
        "arn:aws:execute-api:us-east-1:000000000000:api1/test/GET/*"
    ]


B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_only_canonical_base64url_verifies():
    """A 32-byte signature is 43 characters: the last carries 2 bits beyond the bytes, which base64
    decoders ignore. A token whose last character differs only there decodes to the same signature;
    it is refused, as are padding and characters outside the url-safe alphabet."""
    import base64

    from handlers.auth import b64url_decode

    token = mint(14911, ttl_seconds=600, now=NOW, auth=AUTH)
    assert verify_jwt(token, auth=AUTH, now=NOW).customer_id == 14911
    signing_input, _, signature = token.rpartition(".")
    assert len(signature) == 43
    unused_bits = 2 ** (len(signature) * 6 - 32 * 8) - 1  # 0b11
    position = B64URL_ALPHABET.index(signature[-1])
    for flip in range(1, unused_bits + 1):
        tampered = signature[:-1] + B64URL_ALPHABET[position ^ flip]
        # The same bytes to a lenient decoder: what made the changed token verify.
        assert base64.urlsafe_b64decode(tampered + "=") == base64.urlsafe_b64decode(signature + "=")
        with pytest.raises(AuthError, match="not canonical base64url"):
            verify_jwt(signing_input + "." + tampered, auth=AUTH, now=NOW)
        with pytest.raises(AuthError):
            authenticate("Bearer " + signing_input + "." + tampered, auth=AUTH, now=NOW)
    # Every segment, whatever its length: "QQ" is b"A", and so (leniently) are "QR", "QS", "QT".
    assert b64url_decode("QQ") == b"A" and b64url_decode("QUE") == b"AA"
    for text in ("QR", "QS", "QT", "QUF", "QQ==", "QQ=", "Q+E", "Q/E", "QU E", "QUE\n"):
        with pytest.raises(AuthError, match="base64url"):
            b64url_decode(text)
    # The header and payload are signed as the text received, so a respelled one fails the signature
    # check anyway; b64url_decode refuses it on its own too.
    header, payload, _ = token.split(".")
    for segment in (header, payload):
        if len(segment) % 4:  # its last character has unused bits
            changed = segment[:-1] + B64URL_ALPHABET[B64URL_ALPHABET.index(segment[-1]) ^ 1]
            with pytest.raises(AuthError, match="not canonical base64url"):
                b64url_decode(changed)
            with pytest.raises(AuthError):
                verify_jwt(token.replace(segment, changed, 1), auth=AUTH, now=NOW)
