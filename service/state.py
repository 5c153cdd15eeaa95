"""The state the service holds: configuration, users, energy counters and device run time.

Every change is validated by the pure functions of service.core, written to disk and only
then made visible and announced to listeners (the bus publisher), under one lock, so an
acknowledged change is on disk and what is in memory always matches what is on disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from service.core import allocation as core
from service.core import config_edit, pairing
from service.core.allocation import (
    Allocation,
    AllocationCache,
    AllocationInput,
    EvseInput,
    Memory,
    MeterInput,
)
from service.core.authorization import RfidResult
from service.core.config_edit import ConfigEdit, EditError, describe_validation_error
from service.core.control_law import ControlMemory
from service.core.dev_info import EVSE_STATE_OFFLINE, device_info, params_info, redact_device
from service.core.device_types import DeviceTypeRegistry
from service.core.models import (
    EvseConfig,
    EvseState,
    Installation,
    MeterConfig,
    MeterState,
    Params,
    User,
)
from service.core.runtime import DeviceRuntime, carry_over
from service.core.virtual_meters import is_virtual, virtual_reading
from service.evse_inputs import Windows, age_of, evse_input, is_settled, settled_evse_input
from service.store import EnergyCounters, Store, UserBook

log = logging.getLogger(__name__)


class StateListener(Protocol):
    def params_changed(self) -> None: ...
    def device_changed(self, dev_id: str) -> None: ...
    def device_removed(self, dev_id: str) -> None: ...
    def device_state_changed(self, dev_id: str) -> None: ...


class RejectedMessage(ValueError):
    """A bus message that was refused; the message says why."""


class ServiceState:
    def __init__(
        self,
        store: Store,
        registry: DeviceTypeRegistry,
        installation: Installation,
        users: UserBook,
        energy: EnergyCounters,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.installation = installation
        self._virtual_of: Installation | None = None
        self._virtual: list[str] = []
        self.users = users
        self.energy = energy
        self.clock = clock
        self.runtime: dict[str, DeviceRuntime] = {d: DeviceRuntime() for d in installation.devices}
        # Settings of this process shown among the params (service/app.py fills them in).
        self.server_params: dict[str, Any] = {}
        self.listeners: list[StateListener] = []
        self._lock = asyncio.Lock()
        # The load balancer's memory between runs and its last result (see control_loop).
        self.memory = Memory()
        # The allocation's caches, handed to every run (the control loop runs one at a time).
        self.allocation_cache = AllocationCache()
        # The control law's memory (what each EVSE was last commanded, who is still following
        # a cut); see service/core/control_law.py.
        self.control = ControlMemory()
        self.allocation: Allocation | None = None
        # Soft-meter energy counted since the counters were last written to disk.
        self.energy_dirty = False
        # The last allocation's notes, to log each when it appears (see _take_notes).
        self._notes: tuple[str, ...] = ()
        self._noted: dict[str, str] = {}  # device → its note, for last_error
        # set_cm_vars&tmp=1: variables held in memory only, over the stored ones (the
        # product's "do not write to flash", for values a script sets every few seconds).
        self.volatile_cm_vars: dict[str, float | str] = {}
        self._effective: tuple[Params, Params] | None = None  # (stored, effective)

    @classmethod
    def load(cls, store: Store, registry: DeviceTypeRegistry) -> ServiceState:
        store.prepare()
        return cls(
            store, registry, store.load_installation(), store.load_users(), store.load_energy()
        )

    # -- reading -------------------------------------------------------------------------

    def params(self) -> Params:
        """The params in force: the stored ones with the volatile cm_vars over them."""
        stored = self.installation.params
        if not self.volatile_cm_vars:
            return stored
        if self._effective is None or self._effective[0] is not stored:
            cm_vars = {**stored.cm_vars, **self.volatile_cm_vars}
            self._effective = (stored, stored.model_copy(update={"cm_vars": cm_vars}))
        return self._effective[1]

    def params_info(self) -> dict[str, Any]:
        if self.allocation is None:
            info = params_info(self.installation, self.clock(), params=self.params())
        else:
            info = params_info(
                self.installation,
                self.clock(),
                self.allocation.cons_evse_power,
                self.allocation.avail_evse_power,
                params=self.params(),
            )
        # What the process's settings say (the OCPP server's port and TLS), read-only.
        info.update(self.server_params)
        return info

    def device_info(self, dev_id: str, *, admin: bool = False) -> dict[str, Any]:
        config = self.installation.devices[dev_id]
        now = self.clock()
        runtime = self.runtime.get(dev_id)
        if runtime is None:
            runtime = self.runtime[dev_id] = DeviceRuntime()
        if is_virtual(config.dev_type):
            # Computed from the others now, never measured (service/core/virtual_meters.py).
            reading = virtual_reading(
                config.dev_type,
                self.installation.devices,
                {d: r.state for d, r in self.runtime.items()},
                self.allocation,
                now,
            )
            runtime = DeviceRuntime(state=reading, received_at=now)
        info = device_info(
            config,
            runtime,
            self.registry,
            now,
            self.energy.soft_meter_wh.get(dev_id, 0.0),
        )
        return info if admin else redact_device(info, self.users.users)

    def virtual_meters(self) -> list[str]:
        """The devices whose info follows the others' (virtual meters). Asked at every
        state an EVSE sends: kept per installation object (a change replaces it), as a scan
        of every device per report cost a site of 1,000 EVSEs 0.1 s per round of reports."""
        installation = self.installation
        if self._virtual_of is not installation:
            self._virtual = [
                d.dev_id for d in installation.devices.values() if is_virtual(d.dev_type)
            ]
            self._virtual_of = installation
        return self._virtual

    def dev_info(self, *, admin: bool = False) -> dict[str, Any]:
        return {
            "params": self.params_info(),
            "devices": [self.device_info(d, admin=admin) for d in self.installation.devices],
            "auth_cnt": sum(
                1
                for d in self.installation.devices
                if (r := self.runtime.get(d)) is not None
                and r.result is not None
                and r.result.needs_auth
            ),
            "loadmgr_disabled": not self.installation.params.lb_enabled,
        }

    def new_user_id(self) -> str:
        while True:
            candidate = str(1_000_000_000 + secrets.randbelow(9_000_000_000))
            if candidate not in self.users.users:
                return candidate

    # -- changing configuration ----------------------------------------------------------

    async def _save(self, name: str, document: Any) -> None:
        # fsync takes milliseconds: keep it off the event loop.
        await asyncio.to_thread(self.store.save, name, document)

    async def _commit_edit(self, edit: ConfigEdit) -> None:
        await self._save(Store.CONFIG, edit.installation)
        if edit.soft_meters:
            energy = self.energy.model_copy(
                update={"soft_meter_wh": {**self.energy.soft_meter_wh, **edit.soft_meters}}
            )
            await self._save(Store.ENERGY, energy)
            self.energy = energy
        self.installation = edit.installation
        for dev_id in edit.changed_devices:
            self.runtime.setdefault(dev_id, DeviceRuntime())
        if edit.params_changed:
            self._notify(lambda listener: listener.params_changed())
        for dev_id in {*edit.changed_devices, *edit.soft_meters}:
            self._notify(lambda listener, d=dev_id: listener.device_changed(d))  # type: ignore[misc]

    async def set_params(self, body: Any) -> ConfigEdit:
        async with self._lock:
            edit = config_edit.apply_set_params(
                self.installation, body, self.registry, set(self.users.users)
            )
            await self._commit_edit(edit)
            return edit

    async def set_device(self, dev_id: str, patch: Any) -> ConfigEdit:
        async with self._lock:
            edit = config_edit.apply_device_set(
                self.installation, dev_id, patch, self.registry, set(self.users.users)
            )
            await self._commit_edit(edit)
            return edit

    async def delete_device(self, dev_id: str) -> None:
        async with self._lock:
            installation = config_edit.delete_device(self.installation, dev_id)
            await self._save(Store.CONFIG, installation)
            if dev_id in self.energy.soft_meter_wh:
                energy = EnergyCounters(
                    soft_meter_wh={
                        k: v for k, v in self.energy.soft_meter_wh.items() if k != dev_id
                    }
                )
                await self._save(Store.ENERGY, energy)
                self.energy = energy
            detached = [
                k for k, d in installation.devices.items() if d != self.installation.devices[k]
            ]
            self.installation = installation
            self.runtime.pop(dev_id, None)
            self._notify(lambda listener: listener.device_removed(dev_id))
            for other in detached:
                self._notify(lambda listener, d=other: listener.device_changed(d))  # type: ignore[misc]

    async def reset_device(self, dev_id: str) -> None:
        """Destroy and re-create: the configuration and the energy counter stay; everything
        learnt at run time goes: the last state, communication errors, the last verdict and
        command, and an EVSE's session (its authorisation and user, overrides, learnt phases,
        pause) with the control law's memory of it. (Call it through the control loop, which
        must not run meanwhile.)"""
        async with self._lock:
            if dev_id not in self.installation.devices:
                raise EditError(f"unknown device {dev_id!r}")
            self.runtime[dev_id] = DeviceRuntime()
            self.memory = dataclasses.replace(
                self.memory, evses={k: v for k, v in self.memory.evses.items() if k != dev_id}
            )
            self.control = dataclasses.replace(
                self.control, evses={k: v for k, v in self.control.evses.items() if k != dev_id}
            )
            self._notify(lambda listener: listener.device_removed(dev_id))
            self._notify(lambda listener: listener.device_changed(dev_id))

    async def set_soft_meter(self, dev_id: str, value_wh: float | None) -> float:
        async with self._lock:
            device = self.installation.devices.get(dev_id)
            if not isinstance(device, EvseConfig):
                raise EditError(f"unknown EVSE {dev_id!r}")
            old = self.energy.soft_meter_wh.get(dev_id, 0.0)
            if value_wh is not None:
                energy = self.energy.model_copy(
                    update={"soft_meter_wh": {**self.energy.soft_meter_wh, dev_id: value_wh}}
                )
                await self._save(Store.ENERGY, energy)
                self.energy = energy
                self._notify(lambda listener: listener.device_changed(dev_id))
            return old

    async def accept_license(self, accepted: bool, allow_usage_stats: bool) -> None:
        async with self._lock:
            installation = self.installation.model_copy(
                update={"license_accepted": accepted, "allow_usage_stats": allow_usage_stats}
            )
            await self._save(Store.CONFIG, installation)
            self.installation = installation

    async def set_cm_vars(self, variables: dict[str, float | str], *, persist: bool = True) -> None:
        """Stored (persist) or held in memory only until the next start (tmp=1). A stored
        variable replaces a volatile one of its name."""
        async with self._lock:
            stored = self.installation.params.cm_vars
            if persist:
                edit = config_edit.apply_set_params(
                    self.installation,
                    {"cm_vars": {**stored, **variables}},
                    self.registry,
                    set(self.users.users),
                )
                await self._commit_edit(edit)
                shadowed = [name for name in variables if name in self.volatile_cm_vars]
                for name in shadowed:
                    del self.volatile_cm_vars[name]
                if shadowed:
                    self._effective = None
                    self._notify(lambda listener: listener.params_changed())
                return
            # Checked as a stored change would be (names, number of variables); not saved.
            config_edit.apply_set_params(
                self.installation,
                {"cm_vars": {**stored, **self.volatile_cm_vars, **variables}},
                self.registry,
                set(self.users.users),
            )
            self.volatile_cm_vars.update(variables)
            self._effective = None
            self._notify(lambda listener: listener.params_changed())

    async def set_user(self, body: Any, *, is_admin: bool) -> str:
        async with self._lock:
            users, user_id = config_edit.apply_set_user(
                self.users.users, body, is_admin, self.new_user_id()
            )
            book = UserBook(users=users)
            await self._save(Store.USERS, book)
            self.users = book
            return user_id

    async def delete_user(self, user_id: str) -> None:
        async with self._lock:
            if user_id not in self.users.users:
                raise EditError(f"unknown user {user_id!r}")
            referenced = [
                d.dev_id
                for d in self.installation.devices.values()
                if isinstance(d, EvseConfig) and user_id in d.users
            ]
            if referenced:
                raise EditError(
                    f"user {user_id!r} is still allowed at {', '.join(referenced)}: "
                    "remove it from those EVSEs' users first"
                )
            book = UserBook(users={k: v for k, v in self.users.users.items() if k != user_id})
            await self._save(Store.USERS, book)
            self.users = book

    def user(self, user_id: str) -> User | None:
        return self.users.users.get(user_id)

    # -- load balancing ------------------------------------------------------------------

    def stale_after_s(self) -> float:
        return core.stale_after_s(self.installation.params)

    def allocation_input(self, now: float) -> AllocationInput:
        """A snapshot of everything the allocation reads; immutable, so it may be computed
        on in another thread while the state moves on."""
        evses: dict[str, EvseInput] = {}
        meters: dict[str, MeterInput] = {}
        for dev_id, config in self.installation.devices.items():
            # Virtual meters are shown, never balanced on: their figures come from these.
            if isinstance(config, MeterConfig) and not is_virtual(config.dev_type):
                runtime = self.runtime.get(dev_id)
                state = runtime.state if runtime is not None else None
                meters[dev_id] = MeterInput(
                    config, state if isinstance(state, MeterState) else None, age_of(runtime, now)
                )
        # Each EVSE's draw is paired with the grid reading it is subtracted from (pairing).
        times = pairing.grid_reading_times((m.config, m.state) for m in meters.values())
        groups = self.installation.groups
        time_of_group: dict[int, float | None] = {}
        windows = Windows.of(self.params())
        moving = windows.moving
        control = self.control
        controls = control.evses
        unsure = False
        for dev_id, config in self.installation.devices.items():
            if not isinstance(config, EvseConfig):
                continue
            g = config.group
            if g not in time_of_group:
                time_of_group[g] = pairing.reading_time_for(g, groups, times)
            runtime = self.runtime.get(dev_id)
            ctl = controls.get(dev_id)
            if is_settled(ctl, now, moving):
                evse, doubt = settled_evse_input(
                    config, runtime, ctl, time_of_group[g], now, windows.follow
                )
            else:
                evse, doubt = evse_input(
                    dev_id, config, runtime, control, time_of_group[g], now, windows
                )
            evses[dev_id] = evse
            unsure = unsure or doubt
        return AllocationInput(
            params=self.params(),
            groups=self.installation.groups,
            evses=evses,
            meters=meters,
            users=self.users.users,
            now=now,
            stale_after_s=self.stale_after_s(),
            utc_offset_s=time.localtime(now).tm_gmtoff,
            figures_unsure=unsure,
        )

    def apply_allocation(self, result: Allocation, now: float) -> set[str]:
        """Takes an allocation's verdicts into the run time; returns the devices whose shown
        figures changed."""
        self.memory = result.memory
        self.allocation = result
        changed: set[str] = set()
        if result.notes != self._notes:
            changed |= self._take_notes(result.notes)
        stale_after = self.stale_after_s()
        for dev_id in self.installation.devices:
            runtime = self.runtime.get(dev_id)
            if runtime is None:
                runtime = self.runtime[dev_id] = DeviceRuntime()
            if runtime.watched_since is None:
                runtime.watched_since = now
            # A device not heard from yet gets one staleness period before it counts as a
            # communication error (the allocation treats it as lost meanwhile, which is safe).
            failing = dev_id in result.com_err and (
                runtime.received_at is not None or now - runtime.watched_since > stale_after
            )
            if failing != runtime.com_err:
                changed.add(dev_id)
            if failing and not (runtime.state is not None and runtime.state.com_err):
                reason = self._noted.get(dev_id) or _stale_reason(runtime, now, stale_after)
                runtime.set_com_err(True, now, reason)
            elif not failing and runtime.com_err:
                runtime.set_com_err(False, now)
            evse = result.evses.get(dev_id)
            if evse is not None:
                # A verdict that did not change is mostly the very same object.
                if runtime.result is None or (
                    evse is not runtime.result and evse != runtime.result
                ):
                    changed.add(dev_id)
                runtime.result = evse
        if result.energy_wh:
            counters = dict(self.energy.soft_meter_wh)
            for dev_id, wh in result.energy_wh.items():
                if dev_id in self.installation.devices and wh > 0:
                    counters[dev_id] = counters.get(dev_id, 0.0) + wh
                    changed.add(dev_id)
            self.energy = EnergyCounters(soft_meter_wh=counters)
            self.energy_dirty = True
        return changed

    def _take_notes(self, notes: tuple[str, ...]) -> set[str]:
        """The allocation's notes (a maximum it could not evaluate, a reading that no maximum
        explains, an unknown group) are logged when they appear, and one about a device
        ("E1: …") becomes that device's last_error in get_dev_info. Returns those devices."""
        before = set(self._notes)
        self._notes = notes
        self._noted = {}
        changed: set[str] = set()
        for note in notes:
            if note not in before:
                log.warning("load balancing: %s", note)
            dev_id, sep, text = note.partition(": ")
            runtime = self.runtime.get(dev_id) if sep else None
            if runtime is None:
                continue
            self._noted[dev_id] = text
            if runtime.last_error != text:
                runtime.last_error = text
                changed.add(dev_id)
        return changed

    async def save_energy(self) -> None:
        async with self._lock:
            if self.energy_dirty:
                await self._save(Store.ENERGY, self.energy)
                self.energy_dirty = False

    async def write_back_overdraft(self, overdraft_cur: int) -> None:
        """The allocation reports the largest overdraft seen; the params show it and a user
        may reset it to 0 with set_params."""
        async with self._lock:
            params = self.installation.params
            if params.overdraft_cur == overdraft_cur:
                return
            installation = self.installation.model_copy(
                update={"params": params.model_copy(update={"overdraft_cur": overdraft_cur})}
            )
            await self._save(Store.CONFIG, installation)
            self.installation = installation
            self._notify(lambda listener: listener.params_changed())

    def enter_rfid(self, rfid: str, dev_id: str | None, now: float) -> RfidResult:
        inp = self.allocation_input(now)
        self.memory, outcome = core.enter_rfid(
            self.memory, rfid, dev_id, self.users.users, inp.evses, now, inp.stale_after_s
        )
        return outcome

    def override(self, dev_id: str, flags: str, mamps: int | None) -> None:
        self.memory = core.override(self.memory, dev_id, flags, mamps)

    # -- run time ------------------------------------------------------------------------

    def record_state(self, dev_id: str, payload: bytes) -> EvseState | MeterState:
        """A bridge's measurement message; raises RejectedMessage and changes nothing if bad."""
        device = self.installation.devices.get(dev_id)
        if device is None:
            raise RejectedMessage(f"state for unknown device {dev_id!r}")
        if is_virtual(device.dev_type):
            raise RejectedMessage(f"state for {dev_id}: a virtual meter is computed, not measured")
        model: type[EvseState | MeterState] = (
            EvseState if isinstance(device, EvseConfig) else MeterState
        )
        now = self.clock()
        try:
            # A bridge's message has its ts: parsed and checked in one pass in pydantic's
            # core, at half the cost of json.loads and model_validate (a thousand EVSEs
            # report every second). Anything else takes the path below, which also says why.
            state = model.model_validate_json(payload)
        except ValidationError:
            state = self._parse_state(dev_id, model, payload, now)
        runtime = self.runtime.get(dev_id)
        if runtime is None:
            runtime = self.runtime[dev_id] = DeviceRuntime()
        if isinstance(state, EvseState) and state.com_err and "state" not in state.model_fields_set:
            # A bridge that cannot reach its wallbox may not know its state: offline, not
            # the model's default 1 (no vehicle), which would end a session that goes on.
            state = state.model_copy(update={"state": EVSE_STATE_OFFLINE})
        elif self._pushed(device.dev_type):
            # set_ajax_*: a field a push leaves out keeps its last value (docs/api.md).
            state = carry_over(runtime.state, state)
        runtime.record_state(state, now)
        self._notify(lambda listener: listener.device_state_changed(dev_id))
        return state

    def _pushed(self, dev_type: str) -> bool:
        """An HTTP-input device: its states are pushes that may leave fields out."""
        return dev_type in self.registry and self.registry.get(dev_type).transport == "http"

    @staticmethod
    def _parse_state(
        dev_id: str, model: type[EvseState | MeterState], payload: bytes, now: float
    ) -> EvseState | MeterState:
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RejectedMessage(f"state for {dev_id}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RejectedMessage(f"state for {dev_id}: not a JSON object")
        data.setdefault("ts", now)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise RejectedMessage(f"state for {dev_id}: {describe_validation_error(exc)}") from None

    def _notify(self, call: Callable[[StateListener], None]) -> None:
        for listener in self.listeners:
            try:
                call(listener)
            except Exception:
                log.exception("state listener failed")


def _stale_reason(runtime: DeviceRuntime, now: float, stale_after: float) -> str:
    if runtime.received_at is None:
        return "no data received yet"
    return f"no data for {now - runtime.received_at:.0f} s (stale after {stale_after:g} s)"
