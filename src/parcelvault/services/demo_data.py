"""Demo data: fictional shipments with realistic histories, in the import format.

`generate(seed=, count=, now=)` yields, for each shipment, its shipment record and
then its events, deterministically for a seed and `now`. Shipments go between real
cities of GB, DE, FR and NL; people, streets and contacts are made up (e-mail
addresses at example.* domains, phone numbers from ranges reserved for drama).
Event times carry the UTC offset of the country the scan happened in (European
summer time included) and are never later than `now`.

`load_demo(vault=, ...)` is `parcelvault demo`: a `demo-shop` tenant loaded through
the import pipeline, and a few of its shipments to try the tracking page with.
"""

from __future__ import annotations

import contextlib
import random
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select

from parcelvault.adapters.db.tables import shipments
from parcelvault.domain import tracking_numbers
from parcelvault.domain.errors import Conflict, InvalidInput
from parcelvault.domain.statuses import Reason, Status
from parcelvault.services import importer, tenants, tracking
from parcelvault.services.vault import Vault

DEMO_TENANT = "demo-shop"


@dataclass(frozen=True)
class City:
    name: str
    region: str
    code: str
    postcodes: tuple[str, ...]
    lat: float
    lon: float


@dataclass(frozen=True)
class Country:
    code: str
    standard_offset_hours: int
    hub: str
    cities: tuple[City, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    streets: tuple[str, ...]
    second_lines: tuple[str, ...]


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _cities(table: str) -> tuple[City, ...]:
    """One city a line: name | region | depot code | lat | lon | postcodes (or prefixes)."""
    cities = []
    for row in table.strip().splitlines():
        name, region, code, lat, lon, postcodes = (cell.strip() for cell in row.split("|"))
        cities.append(City(name, region, code, tuple(postcodes.split()), float(lat), float(lon)))
    return tuple(cities)


# Real cities, regions and postcode districts; every person and street is made up.
_GB_CITIES = """
London     | Greater London     | LON | 51.5072 | -0.1276 | E1 EC2A N1 SE1 SW9 W1D
Manchester | Greater Manchester | MAN | 53.4808 | -2.2426 | M1 M4 M14 M20
Birmingham | West Midlands      | BHX | 52.4862 | -1.8904 | B1 B5 B13 B29
Leeds      | West Yorkshire     | LBA | 53.8008 | -1.5491 | LS1 LS6 LS8 LS11
Bristol    | Bristol            | BRS | 51.4545 | -2.5879 | BS1 BS3 BS6 BS8
Glasgow    | Scotland           | GLA | 55.8642 | -4.2518 | G1 G3 G12 G41
Edinburgh  | Scotland           | EDI | 55.9533 | -3.1883 | EH1 EH3 EH6 EH9
"""
_DE_CITIES = """
Berlin            | Berlin              | BER | 52.5200 | 13.4050 | 10115 10178 10243 10435 12043
Hamburg           | Hamburg             | HAM | 53.5511 | 9.9937  | 20095 20354 22041 22767
München           | Bayern              | MUC | 48.1351 | 11.5820 | 80331 80469 80802 81667
Köln              | Nordrhein-Westfalen | CGN | 50.9375 | 6.9603  | 50667 50674 50823 51063
Frankfurt am Main | Hessen              | FRA | 50.1109 | 8.6821  | 60311 60316 60487 60594
Leipzig           | Sachsen             | LEJ | 51.3397 | 12.3731 | 04103 04109 04275 04315
Stuttgart         | Baden-Württemberg   | STR | 48.7758 | 9.1829  | 70173 70176 70190 70599
"""
_FR_CITIES = """
Paris     | Île-de-France              | PAR | 48.8566 | 2.3522  | 75003 75011 75015 75018 75020
Lyon      | Auvergne-Rhône-Alpes       | LYS | 45.7640 | 4.8357  | 69001 69003 69006 69007
Marseille | Provence-Alpes-Côte d'Azur | MRS | 43.2965 | 5.3698  | 13001 13005 13008 13013
Lille     | Hauts-de-France            | LIL | 50.6292 | 3.0573  | 59000 59800
Toulouse  | Occitanie                  | TLS | 43.6047 | 1.4442  | 31000 31200 31400 31500
Bordeaux  | Nouvelle-Aquitaine         | BOD | 44.8378 | -0.5792 | 33000 33100 33200 33800
Nantes    | Pays de la Loire           | NTE | 47.2184 | -1.5536 | 44000 44100 44200 44300
"""
_NL_CITIES = """
Amsterdam | Noord-Holland | AMS | 52.3676 | 4.9041 | 1012 1017 1053 1072 1094
Rotterdam | Zuid-Holland  | RTM | 51.9244 | 4.4777 | 3011 3021 3062 3072
Den Haag  | Zuid-Holland  | HAG | 52.0705 | 4.3007 | 2511 2514 2563 2595
Utrecht   | Utrecht       | UTC | 52.0907 | 5.1214 | 3511 3521 3572 3584
Eindhoven | Noord-Brabant | EIN | 51.4416 | 5.4697 | 5611 5616 5642
Groningen | Groningen     | GRQ | 53.2194 | 6.5665 | 9711 9712 9721 9741
"""

COUNTRIES: dict[str, Country] = {
    "GB": Country(
        code="GB",
        standard_offset_hours=0,
        hub="Birmingham",
        cities=_cities(_GB_CITIES),
        first_names=_list(
            "Oliver, Amelia, Harry, Isla, George, Ava, Noah, Freya, Arthur, Poppy, Jack, "
            "Evie, Leo, Maisie, Theo, Rosie"
        ),
        last_names=_list(
            "Ashworth, Pemberton, Hollis, Whitcombe, Marston, Fairley, Thornbury, Calloway, "
            "Brierley, Pennington, Haddow, Linford"
        ),
        streets=_list(
            "{n} Station Road, {n} Church Lane, {n} Victoria Street, {n} Mill Lane, "
            "{n} Park Avenue, {n} Albert Road, {n} Queen's Road, {n} Orchard Close, "
            "{n} High Street, {n} Willow Crescent"
        ),
        second_lines=_list("Flat {n}, Flat {n}B, Unit {n}"),
    ),
    "DE": Country(
        code="DE",
        standard_offset_hours=1,
        hub="Frankfurt am Main",
        cities=_cities(_DE_CITIES),
        first_names=_list(
            "Lukas, Mia, Jonas, Hannah, Felix, Lea, Paul, Emma, Maximilian, Sophie, Elias, "
            "Marie, Jakob, Clara, Moritz"
        ),
        last_names=_list(
            "Brandhuber, Kessling, Wendtland, Hollerbach, Zimmerlein, Ostermeier, Falkenrath, "
            "Grünwald, Lindqvist, Steinhöfer, Rautenberg, Müllenbach"
        ),
        streets=_list(
            "Hauptstraße {n}, Bahnhofstraße {n}, Schillerstraße {n}, Goethestraße {n}, "
            "Gartenweg {n}, Lindenallee {n}, Am Markt {n}, Kastanienweg {n}, "
            "Berliner Straße {n}, Rosenstraße {n}"
        ),
        second_lines=_list("Hinterhaus, {n}. OG, Aufgang {n}"),
    ),
    "FR": Country(
        code="FR",
        standard_offset_hours=1,
        hub="Paris",
        cities=_cities(_FR_CITIES),
        first_names=_list(
            "Léa, Gabriel, Chloé, Louis, Manon, Hugo, Camille, Jules, Inès, Arthur, Zoé, "
            "Raphaël, Margaux, Nathan"
        ),
        last_names=_list(
            "Delaunay, Morvan, Castagnet, Rivolier, Beaumanoir, Lacombe, Vasseur, "
            "Peyrelongue, Duhamel, Sarrazin, Fontanel, Marchetti"
        ),
        streets=_list(
            "{n} rue de la République, {n} avenue Victor Hugo, {n} boulevard Voltaire, "
            "{n} rue des Lilas, {n} place de la Mairie, {n} rue du Moulin, "
            "{n} impasse des Tilleuls, {n} rue Pasteur, {n} allée des Acacias"
        ),
        second_lines=_list("Bâtiment {n}, Appartement {n}, Escalier {n}"),
    ),
    "NL": Country(
        code="NL",
        standard_offset_hours=1,
        hub="Utrecht",
        cities=_cities(_NL_CITIES),
        first_names=_list(
            "Daan, Emma, Sem, Julia, Lucas, Tess, Finn, Sophie, Levi, Mila, Milan, Zoë, Bram, Fleur"
        ),
        last_names=_list(
            "van Dijkhuis, Verhoeven, de Wittenburg, Kuipers, Hofstede, van Leeuwarden, "
            "Brouwershaven, Meijerink, Oosterbeek, Stavenuiter, Hoogeveen, Terpstra"
        ),
        streets=_list(
            "Kerkstraat {n}, Dorpsstraat {n}, Molenweg {n}, Stationsweg {n}, "
            "Prinsengracht {n}, Julianalaan {n}, Wilhelminastraat {n}, Beukenlaan {n}, "
            "Nieuwe Gracht {n}"
        ),
        second_lines=_list("{n} hoog, huis, bis"),
    ),
}
_COUNTRY_CODES = tuple(COUNTRIES)
_GB_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
_NL_LETTERS = "ABCDEGHJKLMNPRSTVWXZ"
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
_SERVICES = ("standard", "standard", "standard", "standard", "express", "next_day")


# --- time: per-country offsets, European summer time -------------------------------


@cache
def _summer_time(year: int) -> tuple[datetime, datetime]:
    """UTC instants at which summer time starts and ends (the same in GB and the EU):
    01:00 UTC on the last Sunday of March and of October."""

    def last_sunday(month: int) -> datetime:
        day = date(year, month, 31)
        day -= timedelta(days=(day.weekday() + 1) % 7)
        return datetime.combine(day, time(1), tzinfo=UTC)

    return last_sunday(3), last_sunday(10)


@cache
def _zone(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


def utc_offset(country: str, instant: datetime) -> timedelta:
    start, end = _summer_time(instant.year)
    hours = COUNTRIES[country].standard_offset_hours + (1 if start <= instant < end else 0)
    return timedelta(hours=hours)


def _local_to_utc(country: str, local: datetime) -> datetime:
    guess = (local - timedelta(hours=COUNTRIES[country].standard_offset_hours)).replace(tzinfo=UTC)
    return (local - utc_offset(country, guess)).replace(tzinfo=UTC)


def _local_date(country: str, instant: datetime) -> date:
    return (instant + utc_offset(country, instant)).date()


def local_iso(country: str, instant: datetime) -> str:
    """`instant` as the wall-clock time of `country`, with its offset."""
    offset = utc_offset(country, instant)
    return instant.astimezone(_zone(int(offset.total_seconds()) // 60)).isoformat()


# --- people and places -----------------------------------------------------------------


@cache
def _ascii(text: str) -> str:
    text = text.replace("ß", "ss").replace("ä", "ae").replace("ö", "oe").replace("ü", "ue")
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in plain.lower() if c.isalnum())


def _postcode(rng: random.Random, country: Country, city: City) -> str:
    prefix = rng.choice(city.postcodes)
    if country.code == "GB":
        letters = rng.choice(_GB_INWARD_LETTERS) + rng.choice(_GB_INWARD_LETTERS)
        return f"{prefix} {rng.randint(1, 9)}{letters}"
    if country.code == "NL":
        return f"{prefix} {rng.choice(_NL_LETTERS)}{rng.choice(_NL_LETTERS)}"
    return prefix


def _phone(rng: random.Random, country: str) -> str | None:
    if country == "GB":
        return f"+44 7700 900{rng.randrange(1000):03d}"
    if country == "FR":
        return f"+33 1 99 00 {rng.randrange(100):02d} {rng.randrange(100):02d}"
    return None


@dataclass(frozen=True)
class _Person:
    name: str
    email: str | None
    phone: str | None


def _person(rng: random.Random, country: Country) -> _Person:
    first = rng.choice(country.first_names)
    last = rng.choice(country.last_names)
    email = None
    if rng.random() < 0.9:
        domain = rng.choice(_EMAIL_DOMAINS)
        email = f"{_ascii(first)}.{_ascii(last)}{rng.randint(1, 999)}@{domain}"
    phone = _phone(rng, country.code) if rng.random() < 0.6 else None
    return _Person(f"{first} {last}", email, phone)


def _street(rng: random.Random, country: Country) -> list[str]:
    lines = [rng.choice(country.streets).format(n=rng.randint(1, 180))]
    if rng.random() < 0.2:
        lines.append(rng.choice(country.second_lines).format(n=rng.randint(1, 12)))
    return lines


def _city(country: Country, name: str) -> City:
    return next(city for city in country.cities if city.name == name)


# --- histories -------------------------------------------------------------------------


@dataclass
class _Scan:
    at: datetime
    country: str
    city: City
    status: Status
    description: str
    facility: str | None = None
    reason: Reason | None = None
    proof: bool = False


def _depot(country: str, city: City, hub: bool = False) -> str:
    return f"{country}-{city.code}-{'HUB' if hub else 'D1'}"


class _History:
    """The scans of one shipment in time order: UTC instants, chosen so that local wall
    times look like a carrier's day (deliveries in the daytime, vans out in the morning)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.scans: list[_Scan] = []

    def add(
        self, at: datetime, where: tuple[str, City], status: Status, text: str, **extra: Any
    ) -> None:
        self.scans.append(_Scan(at, where[0], where[1], status, text, **extra))

    def later(self, low_hours: float, high_hours: float) -> datetime:
        seconds = int(self.rng.uniform(low_hours, high_hours) * 3600)
        return self.scans[-1].at + timedelta(seconds=seconds)

    def on_day(self, country: str, days: int, low: float, high: float) -> datetime:
        """A time between hours `low` and `high`, local, `days` after the last scan's day."""
        day = _local_date(country, self.scans[-1].at) + timedelta(days=days)
        offset = timedelta(seconds=int(self.rng.uniform(low, high) * 3600))
        return _local_to_utc(country, datetime.combine(day, time()) + offset)

    def next_morning(self, country: str) -> datetime:
        last = self.scans[-1].at
        arrived_before_five = (last + utc_offset(country, last)).hour < 5
        return self.on_day(country, 0 if arrived_before_five else 1, 6.5, 8.5)


def _route(
    rng: random.Random, origin: tuple[Country, City], destination: tuple[Country, City]
) -> list[tuple[Country, City, bool]]:
    """The 1-3 depots (country, city, is a hub) a parcel passes through."""
    (o_country, o_city), (d_country, d_city) = origin, destination
    route = [(o_country, o_city, False)]
    if o_country is not d_country:
        route.append((d_country, _city(d_country, d_country.hub), True))
    elif o_city is not d_city and rng.random() < 0.6:
        hub = _city(o_country, o_country.hub)
        if hub not in (o_city, d_city):
            route.append((o_country, hub, True))
    if route[-1][1] is not d_city or route[-1][2]:
        route.append((d_country, d_city, False))
    return route


def _history(
    rng: random.Random,
    start: datetime,
    origin: tuple[Country, City],
    destination: tuple[Country, City],
    force: Status | None = None,
) -> list[_Scan]:
    """A full journey: label, collection, 1-3 depots, delivery, with the occasional
    failed attempt, exception or return; `force` (exception or failed attempt) makes
    sure the journey has one. The caller may cut it short."""
    (o_country, o_city), (d_country, d_city) = origin, destination
    h = _History(rng)
    sender = (o_country.code, o_city)
    h.add(start, sender, Status.INFO_RECEIVED, "Shipping label created")
    h.add(h.later(3, 26), sender, Status.IN_TRANSIT, "Parcel collected from the sender")

    cross_border = o_country is not d_country
    customs_border = cross_border and "GB" in (o_country.code, d_country.code)
    trouble: Reason | None = None
    if force is Status.EXCEPTION:
        choices = [Reason.DAMAGED, Reason.ADDRESS_PROBLEM]
        trouble = rng.choice([*choices, Reason.CUSTOMS] if customs_border else choices)
    customs = customs_border and (trouble is Reason.CUSTOMS or rng.random() < 0.3)
    damaged = trouble is Reason.DAMAGED or rng.random() < 0.03

    route = _route(rng, origin, destination)
    for index, (country, city, is_hub) in enumerate(route):
        where = (country.code, city)
        at = {"facility": _depot(country.code, city, is_hub)}
        kind = "hub" if is_hub else "depot"
        travel = (1, 4) if index == 0 else (10, 30) if cross_border and index == 1 else (2, 9)
        h.add(
            h.later(*travel), where, Status.IN_TRANSIT, f"Arrived at the {city.name} {kind}", **at
        )
        if customs and is_hub:
            h.add(
                h.later(1, 3),
                where,
                Status.EXCEPTION,
                "Held by customs for inspection",
                reason=Reason.CUSTOMS,
                **at,
            )
            h.add(h.later(20, 70), where, Status.IN_TRANSIT, "Released by customs", **at)
        if damaged and index == len(route) - 1:
            h.add(
                h.later(0.5, 2),
                where,
                Status.EXCEPTION,
                "Packaging damaged; parcel repacked",
                reason=Reason.DAMAGED,
                **at,
            )
        if index < len(route) - 1:
            h.add(
                h.later(0.5, 3), where, Status.IN_TRANSIT, f"Sorted at the {city.name} {kind}", **at
            )
            h.add(
                h.later(0.5, 4), where, Status.IN_TRANSIT, f"Departed the {city.name} {kind}", **at
            )
        else:
            h.add(h.later(0.5, 3), where, Status.IN_TRANSIT, "Sorted for delivery", **at)

    code = d_country.code
    home = (code, d_city)
    depot = {"facility": _depot(code, d_city)}
    if trouble is Reason.ADDRESS_PROBLEM or rng.random() < 0.04:
        h.add(
            h.later(0.5, 6),
            home,
            Status.EXCEPTION,
            "Address incomplete; asked the sender",
            reason=Reason.ADDRESS_PROBLEM,
            **depot,
        )
        if trouble is None and rng.random() < 0.5:
            h.add(
                h.on_day(code, rng.randint(3, 5), 9, 17),
                home,
                Status.RETURNED_TO_SENDER,
                "No reply from the sender; returning the parcel",
                **depot,
            )
            return h.scans
        h.add(
            h.on_day(code, rng.randint(1, 2), 8, 12),
            home,
            Status.IN_TRANSIT,
            "Address corrected by the sender",
            **depot,
        )
    h.add(h.next_morning(code), home, Status.OUT_FOR_DELIVERY, "Out for delivery", **depot)
    roll = 0.03 + rng.random() * 0.14 if force is Status.FAILED_ATTEMPT else rng.random()
    if roll < 0.03:
        h.add(
            h.on_day(code, 0, 10, 17),
            home,
            Status.FAILED_ATTEMPT,
            "Delivery refused at the door",
            reason=Reason.REFUSED,
        )
        h.add(
            h.on_day(code, 1, 9, 16),
            home,
            Status.RETURNED_TO_SENDER,
            "Refused by the recipient; returning the parcel",
            **depot,
        )
        return h.scans
    if roll < 0.17:
        if rng.random() < 0.1:
            reason, text = Reason.WEATHER, "Not delivered because of severe weather"
        else:
            reason, text = Reason.RECIPIENT_ABSENT, "Nobody was at home; a card was left"
        h.add(h.on_day(code, 0, 10, 18), home, Status.FAILED_ATTEMPT, text, reason=reason)
        if rng.random() < 0.4:
            point = f"{code}-{d_city.code}-P{rng.randint(1, 40):02d}"
            h.add(
                h.on_day(code, 0, 18.5, 20),
                home,
                Status.AVAILABLE_FOR_PICKUP,
                f"Ready for collection at a {d_city.name} pickup point",
                facility=point,
            )
            h.add(
                h.on_day(code, rng.randint(1, 3), 10, 19),
                home,
                Status.DELIVERED,
                "Collected from the pickup point",
                facility=point,
                proof=True,
            )
            return h.scans
        h.add(
            h.on_day(code, 1, 6.5, 8.5),
            home,
            Status.OUT_FOR_DELIVERY,
            "Out for delivery (second attempt)",
            **depot,
        )
    h.add(h.on_day(code, 0, 9.5, 18.5), home, Status.DELIVERED, "Delivered", proof=True)
    return h.scans


_OPEN_TARGETS = (
    (0.10, (Status.INFO_RECEIVED,)),
    (0.55, (Status.IN_TRANSIT,)),
    (0.75, (Status.OUT_FOR_DELIVERY,)),
    (0.85, (Status.FAILED_ATTEMPT, Status.AVAILABLE_FOR_PICKUP)),
    (1.00, (Status.EXCEPTION,)),
)


_FORCEABLE = frozenset({Status.EXCEPTION, Status.FAILED_ATTEMPT})


def _cut(scans: list[_Scan], targets: tuple[Status, ...], rng: random.Random) -> list[_Scan]:
    """The history up to a scan of a target status: the shipment is still under way."""
    candidates = [i for i, scan in enumerate(scans) if scan.status in targets]
    if not candidates:
        candidates = [i for i, scan in enumerate(scans) if scan.status is Status.IN_TRANSIT]
    return scans[: rng.choice(candidates) + 1]


def _fit_before(scans: list[_Scan], now: datetime) -> None:
    """Move a history back by whole days until its last scan is not after `now`."""
    excess = scans[-1].at - now
    if excess > timedelta(0):
        shift = timedelta(days=excess.days + 1)
        for scan in scans:
            scan.at -= shift


def _proof(rng: random.Random, person: _Person, country: Country, city: City) -> dict[str, Any]:
    proof: dict[str, Any] = {}
    roll = rng.random()
    if roll < 0.75:
        proof["received_by"] = person.name
    elif roll < 0.9:
        proof["received_by"] = (
            f"{rng.choice(country.first_names)} {rng.choice(country.last_names)} (neighbour)"
        )
    if "received_by" in proof and rng.random() < 0.8:
        proof["signature"] = f"sig-{rng.getrandbits(48):012x}"
    if "received_by" not in proof or rng.random() < 0.3:
        proof["photo"] = f"pod-{rng.getrandbits(48):012x}.jpg"
    proof["geo"] = {
        "lat": round(city.lat + rng.uniform(-0.04, 0.04), 5),
        "lon": round(city.lon + rng.uniform(-0.06, 0.06), 5),
    }
    return proof


def generate(*, seed: int, count: int, now: datetime) -> Iterator[dict[str, Any]]:
    """`count` shipments, each followed by its events, as import records."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not secrets
    for serial in range(count):
        number = tracking_numbers.issue(rng.getrandbits)
        o_country = COUNTRIES[rng.choice(_COUNTRY_CODES)]
        d_country = o_country if rng.random() < 0.75 else COUNTRIES[rng.choice(_COUNTRY_CODES)]
        o_city = rng.choice(o_country.cities)
        d_city = rng.choice(d_country.cities)
        person = _person(rng, d_country)
        service = rng.choice(_SERVICES)

        roll = rng.random()
        pending = roll < 0.03
        under_way = 0.03 <= roll < 0.28
        targets: tuple[Status, ...] = ()
        if under_way:
            roll = rng.random()
            targets = next(statuses for limit, statuses in _OPEN_TARGETS if roll < limit)
        days_ago = rng.randint(0, 2) if pending or under_way else rng.randint(2, 50)
        start_day = now.date() - timedelta(days=days_ago)
        start = _local_to_utc(
            o_country.code,
            datetime.combine(start_day, time(8))
            + timedelta(minutes=rng.randrange(11 * 60), seconds=rng.randrange(60)),
        )
        scans = []
        if not pending:
            force = targets[0] if targets and targets[0] in _FORCEABLE else None
            scans = _history(rng, start, (o_country, o_city), (d_country, d_city), force)
        if under_way:
            scans = _cut(scans, targets, rng)
        if scans:
            _fit_before(scans, now)
            start = scans[0].at
        start = min(start, now)
        created = _local_date(o_country.code, start)
        transit_days = {"next_day": 1, "express": 2}.get(
            service, 3 if o_country is d_country else 5
        )

        yield {
            "type": "shipment",
            "tracking_number": number,
            "reference": f"ORD-{100000 + serial}",
            "service": service,
            "origin": {
                "country": o_country.code,
                "region": o_city.region,
                "city": o_city.name,
                "postcode": _postcode(rng, o_country, o_city),
            },
            "destination": {
                "country": d_country.code,
                "region": d_city.region,
                "city": d_city.name,
                "postcode": _postcode(rng, d_country, d_city),
                "street": _street(rng, d_country),
            },
            "recipient": {
                key: value
                for key, value in (
                    ("name", person.name),
                    ("email", person.email),
                    ("phone", person.phone),
                )
                if value is not None
            },
            "promised_date": (created + timedelta(days=transit_days)).isoformat(),
        }
        for seq, scan in enumerate(scans, start=1):
            event: dict[str, Any] = {
                "type": "event",
                "tracking_number": number,
                "event_id": f"{number}-{seq:02d}",
                "time": local_iso(scan.country, scan.at),
                "status": scan.status.value,
                "description": scan.description,
                "location": {
                    "country": scan.country,
                    "region": scan.city.region,
                    "city": scan.city.name,
                },
            }
            if scan.facility:
                event["location"]["facility"] = scan.facility
            if scan.reason is not None:
                event["reason"] = scan.reason.value
            if scan.proof:
                event["proof"] = _proof(rng, person, d_country, d_city)
            yield event


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records as JSON Lines; returns how many."""
    written = 0
    with path.open("wb") as handle:
        for record in records:
            handle.write(orjson.dumps(record))
            handle.write(b"\n")
            written += 1
    return written


# --- `parcelvault demo` -------------------------------------------------------------------

_SHOWCASE_ORDER = (
    Status.DELIVERED,
    Status.IN_TRANSIT,
    Status.FAILED_ATTEMPT,
    Status.EXCEPTION,
    Status.OUT_FOR_DELIVERY,
    Status.RETURNED_TO_SENDER,
    Status.AVAILABLE_FOR_PICKUP,
    Status.INFO_RECEIVED,
    Status.PENDING,
)


@dataclass(frozen=True)
class DemoLink:
    tracking_number: str
    display_number: str
    status_label: str
    postcode: str


@dataclass(frozen=True)
class DemoOutcome:
    api_key: str | None
    """The new tenant's API key; None when the tenant existed already."""
    shipments_before: int
    report: importer.ImportReport | None
    """None when the tenant had shipments already and nothing was loaded."""
    links: list[DemoLink]


def load_demo(*, vault: Vault, count: int, seed: int, links: int = 5) -> DemoOutcome:
    api_key = None
    try:
        tenant = tenants.tenant_principal(vault=vault, name=DEMO_TENANT)
    except InvalidInput:
        with contextlib.suppress(Conflict):  # created meanwhile by another process
            api_key = tenants.create_tenant(vault=vault, name=DEMO_TENANT)
        tenant = tenants.tenant_principal(vault=vault, name=DEMO_TENANT)
    with vault.engine.connect() as connection:
        before = connection.execute(
            select(func.count()).where(shipments.c.tenant_id == tenant.tenant_id)
        ).scalar_one()
    report = None
    if before == 0:
        report = importer.import_records(
            vault=vault,
            tenant_name=DEMO_TENANT,
            records=generate(seed=seed, count=count, now=vault.clock()),
        )
    return DemoOutcome(
        api_key, before, report, showcase(vault=vault, tenant_id=tenant.tenant_id, limit=links)
    )


def showcase(*, vault: Vault, tenant_id: int, limit: int) -> list[DemoLink]:
    """Up to `limit` shipments of the tenant, one per status, in an order that tells the
    story (delivered, in transit, failed attempt, exception, ...)."""
    first: dict[str, str] = {}
    query = (
        select(shipments.c.status, func.min(shipments.c.tracking_number))
        .where(shipments.c.tenant_id == tenant_id)
        .group_by(shipments.c.status)
    )
    with vault.engine.connect() as connection:
        first = {status: number for status, number in connection.execute(query)}
    chosen = [first[s.value] for s in _SHOWCASE_ORDER if s.value in first][:limit]
    result = []
    for number in chosen:
        view = tracking.merchant_view(vault=vault, tenant_id=tenant_id, raw_number=number)
        result.append(
            DemoLink(
                tracking_number=view.tracking_number,
                display_number=view.display_number,
                status_label=view.status_label,
                postcode=view.personal.get("destination.postcode", ""),
            )
        )
    return result
