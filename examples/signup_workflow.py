"""A signup workflow: send a confirmation mail once, wait (durably) until the link in it is
clicked, then activate the account. Shows Workflow, ctx.run, ctx.promise and the SQL views.

Run: python examples/signup_workflow.py [DATA_DIR]   (default ./raystate-data)

The "mail" is a line appended to <DATA_DIR>/outbox.txt; the driver plays the user: it reads the
link's token from there and clicks it by calling the workflow's shared handler.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pydantic import BaseModel

from actors import (
    Runtime,
    StatusCode,
    TerminalError,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
)
from actors.client.tables import write

signup = Workflow("Signup")


class Account(BaseModel):
    email: str
    outbox: str  # where the fake mail server delivers


def send_mail(outbox: str, email: str, token: str) -> str:
    """The side effect: runs once per workflow (its result is journaled)."""
    with open(outbox, "a") as f:
        f.write(f"to={email} token={token}\n")
    return f"sent to {email}"


@signup.main()
async def run(ctx: WorkflowContext, account: Account) -> str:
    token = str(ctx.rand.uuid4())  # deterministic: the same on every replay
    ctx.set("status", "mail-sent")
    await ctx.run("mail", send_mail, account.outbox, account.email, token)
    clicked = await ctx.promise("link-clicked", str).value()  # suspends until resolved
    if clicked != token:
        ctx.set("status", "rejected")
        raise TerminalError("the link's token does not match", StatusCode.BAD_REQUEST)
    ctx.set("status", "active")
    return f"{account.email} is active"


@signup.handler()
async def click_link(ctx: WorkflowSharedContext, token: str) -> str:
    ctx.promise("link-clicked").resolve(token)
    return "thanks, you can close this tab"


@signup.handler()
async def status(ctx: WorkflowSharedContext) -> str | None:
    return await ctx.get("status")


def token_in(outbox: Path, email: str, timeout: float = 60.0) -> str:
    """Wait for the mail to arrive (the workflow runs in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in outbox.read_text().splitlines() if outbox.exists() else []:
            if line.startswith(f"to={email} "):
                return line.split("token=")[1]
        time.sleep(0.05)
    raise TimeoutError(f"no mail for {email} within {timeout}s")


def main(data_dir: str = "raystate-data") -> None:
    outbox = Path(data_dir).resolve() / "outbox.txt"
    outbox.parent.mkdir(parents=True, exist_ok=True)
    rt = Runtime.start([signup], data_dir=data_dir, namespace="signup-example")
    try:
        email = f"ann-{int(time.time())}@example.com"
        account = Account(email=email, outbox=str(outbox))
        first = rt.send(run, key=email, arg=account)
        again = rt.send(run, key=email, arg=account)  # same workflow key: attaches to the run
        print(f"workflow {email}: invocation {first.id} (second submission: {again.id})")
        token = token_in(outbox, email)
        # the status change commits together with the mail step's result, just after the mail
        while (current := rt.call(status, key=email)) is None:
            time.sleep(0.05)
        print("status while waiting:", current)
        print("user clicks the link:", rt.call(click_link, key=email, arg=token))
        print("result:", first.result(timeout=60))
        print("status now:", rt.call(status, key=email))
        mails = sum(line.startswith(f"to={email} ") for line in outbox.read_text().splitlines())
        print(f"mails sent to {email}: {mails}")
        print("\nThe workflow's journal and promise, queried with SQL:")
        write(
            rt.sql(
                "SELECT j.index, j.entry_type, j.name, j.completed FROM sys_journal j "
                f"WHERE j.invocation_id = '{first.id}' ORDER BY j.index"
            )
        )
        write(
            rt.sql(
                "SELECT service_key, key, completion_success_value FROM sys_promise "
                f"WHERE service_key = '{email}'"
            )
        )
    finally:
        rt.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
