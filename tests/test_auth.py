"""HS256 verification (stdlib) cross-checked against PyJWT; authorizer policy. Pure logic, no stack."""
from __future__ import annotations

import time

import jwt as pyjwt
import pytest

from ecom_core import config
from handlers.auth import AuthError, authenticate, mint, verify_jwt
from handlers.authorizer import policy_for

AUTH = config.Auth(jwt_secret="unit-test-secret-unit-test-secret-0000", jwt_issuer="iss-x", jwt_audience="aud-y",
                   operator_key="op-key-for-unit-tests")
NOW = 1_700_000_000


def claims(**over):
    return {"iss": "iss-x", "aud": "aud-y", "sub": "14911", "iat": NOW, "exp": NOW + 600, **over}


def test_our_tokens_verify_in_pyjwt_and_theirs_in_ours():
    ours = mint(14911, ttl_seconds=600, now=NOW, auth=AUTH)
    decoded = pyjwt.decode(ours, AUTH.jwt_secret, algorithms=["HS256"], audience="aud-y", issuer="iss-x",
                           options={"verify_exp": False})
    assert decoded["sub"] == "14911" and decoded["exp"] == NOW + 600
    theirs = pyjwt.encode(claims(), AUTH.jwt_secret, algorithm="HS256", headers={"kid": "k1"})
    principal = verify_jwt(theirs, auth=AUTH, now=NOW + 1)
    assert (principal.role, principal.customer_id, principal.expires_at) == ("customer", 14911, NOW + 600)


@pytest.mark.parametrize("token,message", [
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
    ("e30.e30.", "algorithm"),            # {} header
    ("!!!.e30.e30", "base64url"),
])
def test_rejections_name_the_reason(token, message):
    with pytest.raises(AuthError) as info:
        verify_jwt(token, auth=AUTH, now=NOW)
    assert message in str(info.value)


def test_leeway_and_operator_key():
    token = pyjwt.encode(claims(exp=NOW - 29), AUTH.jwt_secret, algorithm="HS256")
    assert verify_jwt(token, auth=AUTH, now=NOW).customer_id == 14911       # within the 30 s leeway
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
        "arn:aws:execute-api:us-east-1:000000000000:api1/test/GET/invoices/*"]
    assert policy["context"] == {"role": "customer", "sub": "14911", "customerId": "14911"}
    operator = authenticate("Operator op-key-for-unit-tests", auth=AUTH)
    assert policy_for(operator, arn)["policyDocument"]["Statement"][0]["Resource"] == [
        "arn:aws:execute-api:us-east-1:000000000000:api1/test/GET/*"]
